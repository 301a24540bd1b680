"""Closing a run: sync_runs status and connections.last_sync_at, idempotent for sensor + in-process callers."""

from __future__ import annotations

from datetime import UTC

from engine import runs
from engine.run_outcome import finish_sync_run
from tests.pipelines.appdb import AppDb


def test_success_completes_the_run_and_stamps_last_sync(app_db: AppDb) -> None:
    cid = app_db.add("c1")
    runs.ensure_run(app_db.db, cid, "run-1", "incremental", tenant_id=app_db.tenant_id)

    assert finish_sync_run(app_db.db, "run-1", cid, succeeded=True)

    record = runs.get(app_db.db, "run-1")
    assert record is not None and record.status == "completed" and record.finished_at is not None
    stamped = app_db.last_sync_at(cid)
    assert stamped is not None and stamped.replace(tzinfo=UTC) == record.finished_at
    # The run-status sensor may fire after run_sync_now already closed the run: nothing changes.
    assert not finish_sync_run(app_db.db, "run-1", cid, succeeded=True)
    assert not finish_sync_run(app_db.db, "run-1", cid, succeeded=False, error="late")
    after = runs.get(app_db.db, "run-1")
    assert after is not None and after.status == "completed"


def test_run_closed_by_the_engine_still_stamps_last_sync(app_db: AppDb) -> None:
    """Bulk exports close their own sync_runs row; the connection still counts as synced."""
    cid = app_db.add("c1", kind="backend")
    runs.ensure_run(app_db.db, cid, "bulk-1", "bulk", tenant_id=app_db.tenant_id)
    runs.complete(app_db.db, "bulk-1")
    assert finish_sync_run(app_db.db, "bulk-1", cid, succeeded=True)
    record = runs.get(app_db.db, "bulk-1")
    stamped = app_db.last_sync_at(cid)
    assert record is not None and stamped is not None
    assert stamped.replace(tzinfo=UTC) == record.finished_at


def test_failure_records_the_error_and_keeps_last_sync(app_db: AppDb) -> None:
    cid = app_db.add("c1")
    runs.ensure_run(app_db.db, cid, "run-2", "full", tenant_id=app_db.tenant_id)
    assert finish_sync_run(app_db.db, "run-2", cid, succeeded=False, error="failed steps: landing__Patient")
    record = runs.get(app_db.db, "run-2")
    assert record is not None
    assert record.status == "failed"
    assert record.error == "failed steps: landing__Patient"
    assert app_db.last_sync_at(cid) is None


def test_run_without_any_step_is_left_alone(app_db: AppDb) -> None:
    cid = app_db.add("c1")
    assert not finish_sync_run(app_db.db, "never-started", cid, succeeded=True)
    assert runs.get(app_db.db, "never-started") is None
    assert app_db.last_sync_at(cid) is None
