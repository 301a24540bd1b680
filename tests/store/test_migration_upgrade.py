"""The app database's Alembic migrations upgrade an old database without losing data (issue 12), on SQLite and
PostgreSQL: the database is created at revision 0001 through the operators' entry point (the ``alembic`` command
with ``store/migrations/alembic.ini``, database named by ``DATABASE_URL``), rows are written at 0001 and at 0002
(the engine's tables), then ``ehrsync db migrate`` takes it to ``head``, whatever head is by then. Every value
written reads back unchanged, through SQL and through the head ORM models; a column a later revision added is
nullable or has a server default (old rows must be valid), and 0004's owner columns are NULL on old runs.
``alembic downgrade`` back to 0001 keeps 0001's rows (the later tables go, by design) and upgrades again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.config import main as alembic_main
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from engine.models import SyncRun
from store import AppDatabase
from store.models import Connection, Tenant

ROOT = Path(__file__).resolve().parents[2]
INI = ROOT / "store" / "migrations" / "alembic.ini"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 8, 30, 15, tzinfo=UTC)

# Rows as revision 0001 knows the tables (every NOT NULL column given).
ROWS_0001: dict[str, list[dict[str, Any]]] = {
    "tenants": [
        {"id": "t1", "name": "Practice One", "settings": {"smartFhir": {"issuer": "https://ehr.example/fhir"}},
         "created_at": T0, "updated_at": T1},
        {"id": "t2", "name": "Ünïcode Clinic", "settings": {}, "created_at": T0, "updated_at": T0},
    ],
    "provider_configs": [
        {"id": "pc1", "tenant_id": "t1", "provider_id": "epic", "config": {"client_id": "abc", "scopes": ["a", "b"]},
         "enabled": True, "created_at": T0, "updated_at": T1},
    ],
    "connections": [
        {"id": "c1", "tenant_id": "t1", "provider_id": "epic", "kind": "patient",
         "fhir_base": "https://ehr.example/fhir", "issuer": "https://ehr.example/fhir", "client_id": "x" * 500,
         "token_endpoint": "https://ehr.example/token", "smart_v1": False, "patient_id": "pat-1",
         "encounter_id": None, "fhir_user": "Patient/pat-1", "group_id": None, "status": "active",
         "granted_scopes": "patient/*.rs offline_access", "sync_frequency_hours": 24, "created_at": T0,
         "updated_at": T1, "last_sync_at": T1},
        {"id": "c2", "tenant_id": "t2", "provider_id": "generic", "kind": "group", "fhir_base": "https://b.example",
         "issuer": None, "client_id": "backend", "token_endpoint": None, "smart_v1": True, "patient_id": None,
         "encounter_id": None, "fhir_user": None, "group_id": "grp0", "status": "disconnected",
         "granted_scopes": None, "sync_frequency_hours": 6, "created_at": T0, "updated_at": T1,
         "last_sync_at": None},
    ],
    "tokens": [
        {"connection_id": "c1", "tenant_id": "t1", "access_token_ct": "ct-access", "refresh_token_ct": "ct-refresh",
         "id_token_ct": None, "key_id": "k1", "token_type": "Bearer", "scope": "patient/*.rs", "issued_at": T0,
         "expires_at": T1, "refresh_expires_at": None, "launch_context": {"patient": "pat-1"}, "updated_at": T1,
         "version": 3},
    ],
    "oauth_states": [
        {"state_hash": "s" * 64, "session_hash": "h" * 64, "code_verifier_ct": "ct-verifier", "key_id": "k1",
         "nonce": "n1", "issuer": "https://ehr.example/fhir", "tenant_id": "t1", "provider_id": "epic",
         "redirect_uri": "https://app.example/cb", "redirect_target": "/done", "launch": None, "scope": "openid",
         "extra": {"aud": "https://ehr.example/fhir"}, "created_at": T0, "expires_at": T1, "used_at": None},
    ],
    "audit_events": [
        {"tenant_id": "t1", "actor": "api_key:t1", "action": "connect", "connection_id": "c1", "outcome": "ok",
         "detail": {"provider": "epic"}, "created_at": T0},
    ],
    "api_keys": [
        {"id": "k1", "tenant_id": "t1", "key_hash": "k" * 64, "name": "admin", "created_at": T0,
         "last_used_at": T1, "revoked_at": None},
    ],
    "signing_keys": [
        {"kid": "sig-1", "tenant_id": None, "alg": "RS384", "private_key_ct": "ct-pem", "key_id": "k1",
         "public_jwk": {"kty": "RSA", "n": "abc", "e": "AQAB"}, "active": True, "created_at": T0, "retired_at": None},
    ],
}  # fmt: skip

# Rows of the engine's tables as revision 0002 created them.
ROWS_0002: dict[str, list[dict[str, Any]]] = {
    "sync_runs": [
        {"id": "run-1", "connection_id": "c1", "tenant_id": "t1", "kind": "incremental", "status": "completed",
         "created_at": T0, "started_at": T0, "finished_at": T1, "counts": {"Observation": {"created": 3}},
         "bytes": 12345, "duration_s": 1.5, "error": None},
    ],
    "sync_cursors": [
        {"connection_id": "c1", "stream": "rest", "resource_type": "Observation", "high_water_mark": T1,
         "last_run_id": "run-1", "pending_run_id": None, "pending_mark": None, "pending": None, "updated_at": T1},
    ],
    "bulk_jobs": [
        {"id": "job-1", "connection_id": "c2", "run_id": "run-2", "stream": "bulk", "type_key": "*",
         "level": "group", "group_id": "grp0", "types": ["Patient"], "since_used": None,
         "kickoff_url": "https://b.example/Group/grp0/$export", "status_url": "https://b.example/status/1",
         "params": {"_type": "Patient"}, "requested_at": T0, "status": "complete", "transaction_time": T1,
         "requires_access_token": True, "manifest": {"output": []}, "error": None, "updated_at": T1},
    ],
    "bulk_job_files": [
        {"job_id": "job-1", "kind": "output", "resource_type": "Patient", "url": "https://b.example/f/1.ndjson",
         "expected_count": 10, "state": "landed", "landed_path": "/landing/1.parquet", "rows": 10, "bytes": 999,
         "quarantined": 0, "attempts": 1, "error": None, "updated_at": T1},
    ],
    "sync_attachments": [
        {"connection_id": "c1", "url": "https://ehr.example/fhir/Binary/1", "resource_type": "DocumentReference",
         "resource_id": "doc-1", "sha256": "a" * 64, "size": 11, "content_type": "text/plain",
         "path": "/attachments/sha256/aa/aa/x", "stored_at": T1},
    ],
}  # fmt: skip


def _typed(name: str, value: Any) -> sa.ColumnClause[Any]:
    if isinstance(value, dict | list):
        return sa.column(name, sa.JSON())
    if isinstance(value, datetime):
        return sa.column(name, sa.DateTime(timezone=True))
    if isinstance(value, bool):
        return sa.column(name, sa.Boolean())
    return sa.column(name)


def _table(name: str, sample: dict[str, Any]) -> sa.TableClause:
    return sa.table(name, *(_typed(k, v) for k, v in sample.items()))


def _insert(engine: sa.Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    with engine.begin() as conn:
        for name, items in rows.items():
            conn.execute(sa.insert(_table(name, items[0])), items)


def _norm(value: Any) -> Any:
    """SQLite hands back naive UTC datetimes and may hand back JSON as text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    return value


def _assert_rows_intact(engine: sa.Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    with engine.connect() as conn:
        for name, items in rows.items():
            table = _table(name, items[0])
            key = next(iter(items[0]))
            stored = [
                {k: _norm(v) for k, v in r._mapping.items()}
                for r in conn.execute(sa.select(table).order_by(sa.column(key)))
            ]
            expected = sorted(items, key=lambda item: item[key])
            assert stored == [{k: _norm(v) for k, v in e.items()} for e in expected], name


def _alembic_cli(url: str, *args: str) -> None:
    """``alembic -c store/migrations/alembic.ini ...`` as an operator runs it, the database named by
    ``DATABASE_URL`` (``alembic.config.main`` is the ``alembic`` command's entry point; in-process for speed)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", url)
        env.delenv("EHRSYNC_DATABASE_URL", raising=False)
        alembic_main(argv=["-c", str(INI), *args])


def _migrate_head_with_the_cli(url: str) -> None:
    from ehrsync.cli import main

    result = CliRunner().invoke(main, ["db", "migrate"], env={"DATABASE_URL": url, "EHRSYNC_DATABASE_URL": ""})
    assert result.exit_code == 0, result.output


def _revision(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())


def _columns(engine: sa.Engine) -> dict[str, dict[str, dict[str, Any]]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"]: c for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


@pytest.fixture
def old_db(db_url: str) -> Iterator[tuple[str, sa.Engine]]:
    """A database at revision 0002 holding rows written at 0001 and at 0002."""
    _alembic_cli(db_url, "upgrade", "0001")
    database = AppDatabase.from_url(db_url)
    try:
        assert _revision(database.engine) == "0001"
        _insert(database.engine, ROWS_0001)
        _alembic_cli(db_url, "upgrade", "0002")
        _insert(database.engine, ROWS_0002)
        yield db_url, database.engine
    finally:
        database.dispose()


def test_upgrade_to_head_keeps_every_row(old_db: tuple[str, sa.Engine]) -> None:
    url, engine = old_db
    before = _columns(engine)
    _migrate_head_with_the_cli(url)
    head = ScriptDirectory.from_config(Config(str(INI))).get_current_head()
    assert _revision(engine) == head
    _assert_rows_intact(engine, ROWS_0001)
    _assert_rows_intact(engine, ROWS_0002)
    after = _columns(engine)
    for table, columns in before.items():
        for name, column in after[table].items():
            if name not in columns:  # added by a later revision: the rows written before must stay valid
                assert column["nullable"] or column.get("default") is not None, f"{table}.{name}"
    database = AppDatabase.from_url(url)
    try:
        with database.session() as session:  # the head models read the old rows
            connection = session.get(Connection, "c1")
            assert connection is not None and connection.client_id == "x" * 500 and connection.smart_v1 is False
            tenant = session.get(Tenant, "t2")
            assert tenant is not None and tenant.name == "Ünïcode Clinic"
            run = session.get(SyncRun, "run-1")
            assert run is not None and run.counts == {"Observation": {"created": 3}}
            assert run.owner_pid is None and run.owner_host is None  # 0004's columns on an old run
    finally:
        database.dispose()


def test_upgrade_is_idempotent_and_downgrade_to_0001_keeps_its_rows(old_db: tuple[str, sa.Engine]) -> None:
    url, engine = old_db
    _migrate_head_with_the_cli(url)
    _migrate_head_with_the_cli(url)  # a second run is a no-op
    _assert_rows_intact(engine, ROWS_0001)
    _alembic_cli(url, "downgrade", "0001")
    assert _revision(engine) == "0001"
    assert "sync_runs" not in sa.inspect(engine).get_table_names()  # 0002's tables go with their revision
    _assert_rows_intact(engine, ROWS_0001)
    _alembic_cli(url, "upgrade", "head")
    _assert_rows_intact(engine, ROWS_0001)
    _alembic_cli(url, "downgrade", "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
