"""A real, migrated app database with tenants and connections, and queued runs, for the Dagster-layer tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.test_utils import create_run_for_test

from engine.models import SyncRun
from engine.run_tags import CONNECTION_TAG
from store import AppDatabase
from store.models import Connection, Tenant
from tests.fixtures.tenant_settings import bulk_allowed


@dataclass
class AppDb:
    url: str
    db: AppDatabase
    tenant_id: str

    def add(
        self,
        cid: str | None = None,
        *,
        status: str = "active",
        kind: str = "patient",
        provider: str = "epic",
        last_sync: datetime | None = None,
        freq: int = 24,
        created: datetime | None = None,
        patient: str | None = "p1",
    ) -> str:
        """A connection; ``patient=None`` for a patient-kind one without a patient (a clinician's EHR launch)."""
        cid = cid or uuid.uuid4().hex
        now = datetime.now(UTC)
        with self.db.session() as session:
            session.add(
                Connection(
                    id=cid,
                    tenant_id=self.tenant_id,
                    provider_id=provider,
                    kind=kind,
                    fhir_base="http://127.0.0.1:9/fhir",
                    client_id="client",
                    patient_id=patient if kind == "patient" else None,
                    group_id="g1" if kind == "group" else None,
                    status=status,
                    sync_frequency_hours=freq,
                    created_at=created or now,
                    updated_at=now,
                    last_sync_at=last_sync,
                )
            )
            session.commit()
        return cid

    def set_status(self, cid: str, status: str) -> None:
        with self.db.session() as session:
            row = session.get(Connection, cid)
            assert row is not None
            row.status = status
            row.updated_at = datetime.now(UTC)
            session.commit()

    def add_sync_row(self, cid: str, created: datetime, not_before: datetime | None = None) -> str:
        """A finished ``sync_runs`` row of ``cid`` created at ``created``, holding its source until ``not_before``."""
        row_id = uuid.uuid4().hex
        status = "failed" if not_before is not None else "completed"
        with self.db.session() as session:
            session.add(
                SyncRun(
                    id=row_id,
                    connection_id=cid,
                    kind="incremental",
                    status=status,
                    created_at=created,
                    started_at=created,
                    finished_at=created,
                    counts={},
                    not_before=not_before,
                )
            )
            session.commit()
        return row_id

    def last_sync_at(self, cid: str) -> datetime | None:
        with self.db.session() as session:
            row = session.get(Connection, cid)
            assert row is not None
            return row.last_sync_at


def make_app_db(url: str, *, migrated: bool = False) -> AppDb:
    """Open (and unless ``migrated``, migrate) the app database at ``url`` and add a tenant."""
    db = AppDatabase.from_url(url)
    if not migrated:
        db.migrate()
    tenant_id = uuid.uuid4().hex
    with db.session() as session:
        session.add(Tenant(id=tenant_id, name="Test practice", settings=bulk_allowed()))
        session.commit()
    return AppDb(url, db, tenant_id)


def queued_run(instance: DagsterInstance, connection_id: str, job_name: str = "incremental_sync") -> DagsterRun:
    """A run waiting in the run queue for ``connection_id`` (as the daemon's queue holds it, not yet launched)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ehrsync"), "__repository__"),
        job_name=job_name,
    )
    run: DagsterRun = create_run_for_test(
        instance,
        job_name=job_name,
        status=DagsterRunStatus.QUEUED,
        tags={CONNECTION_TAG: connection_id},
        remote_job_origin=origin,
    )
    return run
