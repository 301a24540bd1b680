"""A patient-kind connection without a patient (SAL-15: a clinician's EHR launch with no patient in context) files
notes but cannot sync by REST (a sync searches one patient's compartment): the Dagster layer never requests a sync
of it, says why, and a manual sync is refused naming the reason instead of failing a run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunRequest

from ehrsync.run_now import run_batch_now, run_reconcile_now, run_sync_now
from engine import ConnectionNotSyncableError
from engine.connection_snapshots import read_connections
from engine.freshness import find_overdue
from engine.models import SyncRun
from engine.retries import failure_streaks
from engine.settings import PipelineSettings
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from tests.engine.helpers import SyncWorld
from tests.engine.job_runs import world_resources, world_settings
from tests.pipelines.appdb import AppDb, queued_run
from tests.pipelines.scheduler import evaluate_scheduled_syncs, weekly_reconcile_ticks
from tests.pipelines.test_connections_sensor import added, evaluate, removed

LONG_AGO = datetime.now(UTC) - timedelta(days=3)


def _settings(app_db: AppDb, tmp_path: Path) -> PipelineSettings:
    return PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": app_db.url})


def test_sal15_no_partition_and_no_first_sync_for_a_patientless_connection(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """Before: its key joined ``patient_connections`` and a ``full_resync`` was requested, which failed with
    ``connection_not_syncable``. A key left from before is removed, and the connection's runs (its write-back
    runs) are not stopped: it did not leave."""
    app_db.add("clinician", patient=None)
    app_db.add("patient-1")
    result = evaluate(dagster_instance, app_db.url)
    assert added(result) == ["patient-1"]
    assert [r.partition_key for r in result.run_requests or []] == ["patient-1"]
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, ["clinician", "patient-1"])
    writeback = queued_run(dagster_instance, "clinician", job_name="writeback_notes")
    again = evaluate(dagster_instance, app_db.url)
    assert removed(again) == ["clinician"]
    run = dagster_instance.get_run_by_id(writeback.run_id)
    assert run is not None and not run.is_finished


def test_sal15_scheduled_syncs_skip_a_patientless_connection_and_say_why(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """Before: it was due every period (and retried after each failure); now the tick requests nothing for it
    and its skip reason names the connections without a patient, singly or in batches."""
    app_db.add("clinician", patient=None, last_sync=None, created=LONG_AGO)
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, ["clinician"])
    for size in (1, 50):
        result = evaluate_scheduled_syncs(dagster_instance, app_db, batch_size=size)
        assert result.run_requests == []
        assert result.skip_reason is not None and "1 without a patient" in (result.skip_reason.skip_message or "")


def test_sal15_weekly_reconcile_skips_a_patientless_connection(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    app_db.add("clinician", patient=None)
    dagster_instance_on_disk.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, ["clinician"])
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    for _, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, monday):
        assert isinstance(requests, list) and not [r for r in requests if isinstance(r, RunRequest)]


def test_sal15_freshness_never_counts_a_patientless_connection_overdue(app_db: AppDb) -> None:
    app_db.add("clinician", patient=None, created=LONG_AGO)
    report = find_overdue(datetime.now(UTC), read_connections(app_db.db), grace=timedelta(hours=1), windows={})
    assert report.overdue == [] and report.checked == 0 and report.no_patient == 1


def test_sal15_a_manual_sync_or_reconcile_is_refused_naming_the_reason(app_db: AppDb, tmp_path: Path) -> None:
    """Before: ``ehrsync sync`` launched the job, which failed its steps (a failed run, a failure streak)."""
    cid = app_db.add("clinician", patient=None)
    for run in (run_sync_now, run_reconcile_now):
        with pytest.raises(ConnectionNotSyncableError, match="clinician has no patient") as caught:
            run(cid, settings=_settings(app_db, tmp_path))
        assert "notes" in str(caught.value)
    with app_db.db.session() as session:
        assert session.query(SyncRun).count() == 0


def test_sal15_a_batch_member_without_a_patient_is_skipped_not_failed(world: SyncWorld, tmp_path: Path) -> None:
    """A batch queued before the upgrade: the member is skipped (no failure, so no retry streak)."""
    url = world.env.db.engine.url.render_as_string(hide_password=False)
    cid = AppDb(url, world.env.db, world.tenant_id).add("clinician", patient=None, provider="generic")
    with DagsterInstance.ephemeral() as instance:
        result = run_batch_now(
            [cid], "generic", settings=world_settings(world), instance=instance, resources=world_resources(world)
        )
    assert result.success
    assert failure_streaks(world.env.db) == {}


def test_sal15_the_outbox_sensor_still_requests_a_patientless_connections_notes(
    world, sandbox, http, dagster_instance
) -> None:  # type: ignore[no-untyped-def]
    """A guard: its notes name their patient, so write-back goes on while its syncs are never requested."""
    from sqlalchemy import update

    from store.models import Connection
    from tests.engine.writeback_helpers import enqueue, patient_of, writable_connection
    from tests.pipelines.outbox_runs import tick_outbox

    conn = writable_connection(world, sandbox, http)
    patient = patient_of(world, conn)
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == conn).values(patient_id=None))
        session.commit()
    note = enqueue(world, conn, patient_id=patient)
    [request] = tick_outbox(dagster_instance, world, None).run_requests or []
    assert request.run_key == f"note:{note.id}:v1"
