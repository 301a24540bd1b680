"""Revision 0005 upgrades a database written at 0004 without losing rows: a connection disconnected before it gets
its retention clock (``disconnected_at`` = its last change), tenants keep their data until a period is set."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from store import AppDatabase
from store.models import Connection, Tenant


def test_0005_backfills_the_retention_clock_of_disconnected_connections(tmp_path: Path) -> None:
    db = AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}")
    db.migrate("0004")
    changed = "2026-01-02 03:04:05"
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, settings, created_at, updated_at) VALUES "
                          "('t1', 'T', '{}', :at, :at)"), {"at": changed})  # fmt: skip
        for cid, status in (("gone", "disconnected"), ("live", "active")):
            conn.execute(
                text(
                    "INSERT INTO connections (id, tenant_id, provider_id, kind, fhir_base, client_id, smart_v1, "
                    "status, sync_frequency_hours, created_at, updated_at) VALUES "
                    "(:id, 't1', 'generic', 'patient', 'https://ehr.example/fhir', 'c', 0, :status, 24, :at, :at)"
                ),
                {"id": cid, "status": status, "at": changed},
            )

    db.migrate()

    with db.session() as s:
        gone, live, tenant = s.get(Connection, "gone"), s.get(Connection, "live"), s.get(Tenant, "t1")
        assert gone is not None and live is not None and tenant is not None
        assert gone.disconnected_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and gone.data_purged_at is None
        assert live.disconnected_at is None and live.status == "active"
        assert tenant.data_retention_days is None and tenant.name == "T"
    db.dispose()
