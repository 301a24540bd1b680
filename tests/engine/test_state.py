"""Sync state in the app database (migration 0002): run history, cursors, pending landings, Bulk job rows.

Runs on SQLite and on PostgreSQL (``postgres_url``), since production uses either.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from engine import bulk_state, cursors, runs
from engine.connection_info import load_connection
from engine.errors import ConnectionNotFoundError, ConnectionNotSyncableError
from engine.handoff import HandoffError, LandingHandoff
from engine.models import SyncCursor, SyncRun
from store import AppDatabase
from store import database as database_module
from store.models import Connection, ProviderConfig, Tenant

SYNC_TABLES = {"sync_runs", "sync_cursors", "bulk_jobs", "bulk_job_files", "sync_attachments"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'app.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = AppDatabase.from_url(url)
    database.migrate()
    yield database
    database.dispose()


def _downgrade(db: AppDatabase, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(database_module.__file__).parent / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_migration_0002_creates_and_drops_sync_tables(db: AppDatabase):
    assert set(inspect(db.engine).get_table_names()) >= SYNC_TABLES
    _downgrade(db, "0001")
    assert not SYNC_TABLES & set(inspect(db.engine).get_table_names())
    db.migrate()
    assert set(inspect(db.engine).get_table_names()) >= SYNC_TABLES


def test_run_history_lifecycle(db: AppDatabase):
    first = runs.create_run(db, "c1", "incremental", tenant_id="t1")
    assert runs.require(db, first).status == "queued"
    runs.mark_running(db, first)
    runs.complete(db, first, {"Patient": {"fetched": 1, "bytes": 100}})
    second = runs.create_run(db, "c1", "bulk")
    runs.mark_running(db, second)
    runs.fail(db, second, "fhir_server_error: boom")
    runs.create_run(db, "c2", "full")

    history = runs.history(db, "c1")
    assert [r.id for r in history] == [second, first]
    done = runs.require(db, first)
    assert done.status == "completed" and done.bytes == 100 and done.counts["Patient"]["fetched"] == 1
    assert done.started_at is not None and done.finished_at is not None and done.duration_s is not None
    assert done.started_at.tzinfo is not None
    failed = runs.require(db, second)
    assert failed.status == "failed" and failed.error == "fhir_server_error: boom"
    assert runs.get(db, "missing") is None
    with pytest.raises(ValueError, match="unknown sync kind"):
        runs.create_run(db, "c1", "weekly")
    with pytest.raises(runs.SyncRunNotFoundError):
        runs.mark_running(db, "missing")


def test_abandon_stale_closes_only_older_open_runs_of_the_connection(db: AppDatabase):
    dead = runs.create_run(db, "c1", "incremental")
    runs.mark_running(db, dead)
    with db.locked_session() as session:  # its process has exited since
        row = session.get(SyncRun, dead)
        assert row is not None
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        row.owner_pid = child.pid
        session.commit()
    other_conn = runs.create_run(db, "c2", "incremental")
    runs.mark_running(db, other_conn)
    current = runs.create_run(db, "c1", "incremental")
    runs.mark_running(db, current)
    waiting = runs.create_run(db, "c1", "incremental")  # queued after current started: waits its turn
    queued_before = runs.create_run(db, "c1", "incremental", run_id="queued-earlier")
    with db.locked_session() as session:  # queued before current started, still in Dagster's queue
        row = session.get(SyncRun, queued_before)
        assert row is not None
        row.created_at = row.created_at - timedelta(hours=1)
        session.commit()
    assert runs.abandon_stale(db, "c1", keep=current) == 1
    assert runs.require(db, dead).status == "abandoned"
    assert runs.require(db, current).status == "running"
    assert runs.require(db, other_conn).status == "running"
    assert runs.require(db, waiting).status == "queued"
    assert runs.require(db, queued_before).status == "queued"


def test_cursor_moves_only_on_advance_bdx27(db: AppDatabase):
    mark = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert cursors.get_mark(db, "c1", cursors.REST_STREAM, "Observation") is None
    cursors.set_pending(db, "c1", cursors.REST_STREAM, "Observation", "r1", mark, LandingHandoff())
    assert cursors.get_mark(db, "c1", cursors.REST_STREAM, "Observation") is None  # landing alone moves nothing
    pending = cursors.get_pending(db, "c1", cursors.REST_STREAM, "Observation")
    assert pending is not None and pending.run_id == "r1" and pending.mark == mark
    with db.session() as session:
        cursors.advance(session, "c1", cursors.REST_STREAM, "Observation", "r1", mark)
        session.commit()
    assert cursors.get_mark(db, "c1", cursors.REST_STREAM, "Observation") == mark
    assert cursors.get_pending(db, "c1", cursors.REST_STREAM, "Observation") is None
    with db.session() as session:  # a server that sent no clock keeps the old mark
        cursors.advance(session, "c1", cursors.REST_STREAM, "Observation", "r2", None)
        session.commit()
    assert cursors.get_mark(db, "c1", cursors.REST_STREAM, "Observation") == mark
    assert cursors.begin_full(db, "c1", "r3", ["Observation"]) is True  # a full run forgets the marks, once per run
    assert cursors.get_mark(db, "c1", cursors.REST_STREAM, "Observation") is None
    assert cursors.begin_full(db, "c1", "r3", ["Observation"]) is False


def test_pending_row_written_before_the_handoff_version_is_still_read(db: AppDatabase):
    """A landing recorded by the engine before the handoff was typed (no ``version``) is upserted after an
    upgrade; a row this engine cannot read fails with the typed error naming the problem."""
    mark = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    report = {"resource_type": "Observation", "fetched": 2, "files": 1, "duration_s": 0.5}
    old = {"files": [], "report": report, "references": ["Practitioner/p1"], "attachments": []}
    with db.session() as session:
        now = datetime.now(UTC)
        session.add(SyncCursor(connection_id="c1", stream=cursors.REST_STREAM, resource_type="Observation",
                               pending_run_id="r1", pending_mark=mark, pending=old, updated_at=now))  # fmt: skip
        session.add(SyncCursor(connection_id="c1", stream=cursors.REST_STREAM, resource_type="Goal",
                               pending_run_id="r1", pending={**old, "version": 9}, updated_at=now))  # fmt: skip
        session.commit()
    pending = cursors.get_pending(db, "c1", cursors.REST_STREAM, "Observation")
    assert pending is not None and pending.run_id == "r1" and pending.mark == mark
    assert pending.handoff.version == 1 and pending.handoff.references == ("Practitioner/p1",)
    assert pending.handoff.summary.report("Observation").fetched == 2
    with pytest.raises(HandoffError, match="landing handoff version 9 is not supported"):
        cursors.get_pending(db, "c1", cursors.REST_STREAM, "Goal")


def test_bulk_job_saved_before_poll_and_files_tracked_bdx08(db: AppDatabase):
    since = datetime(2026, 1, 1, tzinfo=UTC)
    stream, key = cursors.bulk_stream("group", "g1"), cursors.bulk_type_key(["Patient", "Observation", "Patient"])
    assert key == "Observation,Patient"
    job = bulk_state.save_job(
        db,
        connection_id="c1",
        run_id="r1",
        stream=stream,
        type_key=key,
        level="group",
        group_id="g1",
        types=["Observation", "Patient"],
        since=since,
        kickoff_url="https://ehr/fhir/Group/g1/$export",
        status_url="https://ehr/bulk/status/1",
        params={},
    )
    found = bulk_state.find_active_job(db, "c1", stream, key)
    assert found is not None and found.id == job.id and found.status == "polling" and found.since_used == since
    assert bulk_state.find_active_job(db, "c1", stream, "*") is None
    tx = since + timedelta(days=1)
    files = [
        bulk_state.ManifestFile("output", "Patient", "https://ehr/f/1.ndjson", 2),
        bulk_state.ManifestFile("output", "Patient", "https://ehr/f/1.ndjson", 2),  # repeated item kept once
        bulk_state.ManifestFile("error", "OperationOutcome", "https://ehr/f/e.ndjson", None),
    ]
    bulk_state.save_manifest(db, job.id, transaction_time=tx, requires_access_token=True, manifest={}, files=files)
    resumed = bulk_state.find_job(db, job.id)
    assert resumed.status == "downloading" and resumed.transaction_time == tx
    unfinished = bulk_state.unfinished_files(db, job.id)
    assert [(f.kind, f.state) for f in unfinished] == [("output", "pending"), ("error", "pending")]
    bulk_state.update_file(db, unfinished[0].id, state="done", rows=2)
    assert [f.kind for f in bulk_state.unfinished_files(db, job.id)] == ["error"]
    bulk_state.set_job_status(db, job.id, "completed")
    assert bulk_state.find_active_job(db, "c1", stream, key) is None


def _add_connection(db: AppDatabase, status: str) -> None:
    """Tenant ``t1`` and its patient connection ``c1`` (provider ``generic``) in ``status``."""
    with db.session() as session:
        session.add(Tenant(id="t1", name="T", settings={}))
        session.flush()
        session.add(
            Connection(
                id="c1",
                tenant_id="t1",
                provider_id="generic",
                kind="patient",
                fhir_base="https://ehr.example.org/fhir",
                client_id="app",
                patient_id="p1",
                status=status,
            )
        )
        session.commit()


def test_load_connection_refuses_missing_and_inactive(db: AppDatabase):
    _add_connection(db, "needs_reauth")
    with pytest.raises(ConnectionNotFoundError):
        load_connection(db, "nope")
    with pytest.raises(ConnectionNotSyncableError, match="needs_reauth"):
        load_connection(db, "c1")


def test_load_connection_exposes_provider_config_without_sealed_secrets(db: AppDatabase):
    with db.session() as session:
        session.add(Tenant(id="t1", name="T", settings={}))
        session.flush()
        config = {"clientId": "app", "practiceId": "195900", "clientSecret": {"$enc": "sealed-envelope"}}
        session.add(ProviderConfig(tenant_id="t1", provider_id="athena", config=config))
        session.add(
            Connection(
                id="c1",
                tenant_id="t1",
                provider_id="athena",
                kind="patient",
                fhir_base="https://api.platform.athenahealth.com/fhir/r4",
                client_id="app",
                patient_id="a-1.E-1",
            )
        )
        session.commit()
    assert load_connection(db, "c1").provider_config == {"clientId": "app", "practiceId": "195900"}


def test_a_re_execution_whose_parent_row_is_gone_takes_the_connections_tenant(db: AppDatabase):
    """``continue_run``: a re-executed run whose parent's ``sync_runs`` row was pruned (or never written) still
    records its tenant (the connection's), so the tenant's history and retention see it; before, tenant None."""
    _add_connection(db, "active")
    runs.continue_run(db, "c1", "child", ["pruned-parent"])
    row = runs.require(db, "child")
    assert (row.kind, row.tenant_id, row.status) == ("incremental", "t1", "running")
