"""The run-status sensors close sync_runs rows when a Dagster run ends (daemon path of finish_sync_run)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_run_status_sensor_context,
    job,
    op,
)
from dagster._core.storage.tags import RESUME_RETRY_TAG as DAGSTER_RESUME_RETRY_TAG
from dagster._core.storage.tags import RETRY_NUMBER_TAG as DAGSTER_RETRY_NUMBER_TAG
from dagster._core.test_utils import create_run_for_test

from engine import PATIENT_TYPES, cursors, runs
from engine.batch_sync import batch_sync_run_id
from engine.retries import failure_streaks, source_holds
from engine.run_outcome import finish_sync_run
from engine.run_tags import CONNECTION_TAG
from pipelines.defs._shared.run_control import RESUME_RETRY_TAG, RETRY_NUMBER_TAG
from pipelines.defs.sync.batch import BATCH_SYNC_JOB, batch_run_config
from pipelines.defs.sync.jobs import sync_run_ended
from pipelines.resources import AppDatabaseResource
from store.models import Connection
from tests.pipelines.appdb import AppDb

SENSORS = {s.name: s for s in sync_run_ended}


def report_failure(app_db: AppDb, instance: DagsterInstance, run: DagsterRun) -> None:
    """The failure sensor's evaluation for a run (a batch's, or any job's) that ended failed."""
    context = build_run_status_sensor_context(
        sensor_name="sync_run_failure",
        dagster_event=DagsterEvent(event_type_value=DagsterEventType.RUN_FAILURE.value, job_name=run.job_name),
        dagster_instance=instance,
        dagster_run=run,
        resources={"app_db": AppDatabaseResource(url=app_db.url)},
    )
    SENSORS["sync_run_failure"](context)


@pytest.mark.parametrize(
    ("sensor", "run_status", "event_type", "sync_status", "stamped"),
    [
        ("sync_run_success", DagsterRunStatus.SUCCESS, DagsterEventType.RUN_SUCCESS, "completed", True),
        ("sync_run_failure", DagsterRunStatus.FAILURE, DagsterEventType.RUN_FAILURE, "failed", False),
        ("sync_run_canceled", DagsterRunStatus.CANCELED, DagsterEventType.RUN_CANCELED, "failed", False),
    ],
)
def test_run_end_closes_the_sync_run(
    app_db: AppDb,
    dagster_instance: DagsterInstance,
    sensor: str,
    run_status: DagsterRunStatus,
    event_type: DagsterEventType,
    sync_status: str,
    stamped: bool,
) -> None:
    cid = app_db.add("c1")
    run = create_run_for_test(
        dagster_instance, job_name="incremental_sync", status=run_status, tags={CONNECTION_TAG: cid}
    )
    runs.ensure_run(app_db.db, cid, run.run_id, "incremental", tenant_id=app_db.tenant_id)
    context = build_run_status_sensor_context(
        sensor_name=sensor,
        dagster_event=DagsterEvent(
            event_type_value=event_type.value,
            job_name="incremental_sync",
            message="Steps failed: ['landing__Patient'].",
        ),
        dagster_instance=dagster_instance,
        dagster_run=run,
        resources={"app_db": AppDatabaseResource(url=app_db.url)},
    )

    SENSORS[sensor](context)

    record = runs.get(app_db.db, run.run_id)
    assert record is not None and record.status == sync_status
    assert (app_db.last_sync_at(cid) is not None) is stamped
    prefix = "canceled: " if run_status is DagsterRunStatus.CANCELED else ""  # not retried (engine.retries)
    assert (record.error == prefix + "Steps failed: ['landing__Patient'].") is (not stamped)


@op
def _step() -> None:
    """A step that does nothing: the run only needs a real start and end on the instance."""


@job(name="incremental_sync")
def _finished_job() -> None:
    _step()


@pytest.mark.parametrize(("sensor", "succeeded"), [("sync_run_success", True), ("sync_run_failure", False)])
def test_run_end_records_the_runs_own_finish_time(
    app_db: AppDb, dagster_instance: DagsterInstance, sensor: str, succeeded: bool
) -> None:
    """finishedAt and the duration are the run's (Dagster's run record), not the moment the sensor closed the row.

    Before, the row finished when the sensor ticked (here 0.5 s after the run ended; in production up to minutes
    later, after a daemon backlog), and its duration counted the wait.
    """
    cid = app_db.add("c1")
    result = _finished_job.execute_in_process(instance=dagster_instance, tags={CONNECTION_TAG: cid})
    record = dagster_instance.get_run_record_by_id(result.run_id)
    assert record is not None and record.start_time is not None and record.end_time is not None
    runs.ensure_run(app_db.db, cid, result.run_id, "incremental", tenant_id=app_db.tenant_id)
    time.sleep(0.5)  # the sensor ticks later than the run ended
    event_type = DagsterEventType.RUN_SUCCESS if succeeded else DagsterEventType.RUN_FAILURE
    context = build_run_status_sensor_context(
        sensor_name=sensor,
        dagster_event=DagsterEvent(event_type_value=event_type.value, job_name="incremental_sync", message="x"),
        dagster_instance=dagster_instance,
        dagster_run=record.dagster_run,
        resources={"app_db": AppDatabaseResource(url=app_db.url)},
    )

    SENSORS[sensor](context)

    row = runs.get(app_db.db, result.run_id)
    assert row is not None and row.finished_at is not None and row.started_at is not None
    ended = datetime.fromtimestamp(record.end_time, UTC)
    began = datetime.fromtimestamp(record.start_time, UTC)
    assert abs(_aware(row.finished_at) - ended) < timedelta(milliseconds=1), (row.finished_at, ended)
    assert abs(_aware(row.started_at) - began) < timedelta(milliseconds=1)
    assert row.duration_s is not None and abs(row.duration_s - (record.end_time - record.start_time)) < 0.001
    if succeeded:
        stamped = app_db.last_sync_at(cid)
        assert stamped is not None and abs(_aware(stamped) - ended) < timedelta(milliseconds=1)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("job_name", "kind", "recorded"),
    [
        ("incremental_sync", "incremental", True),
        ("full_resync", "full", True),
        ("reconcile_deletes", None, False),  # not a sync: its failure is not a sync_runs row
    ],
)
def test_a_sync_run_that_failed_before_its_first_step_is_recorded_and_retried(
    app_db: AppDb, dagster_instance: DagsterInstance, job_name: str, kind: str | None, recorded: bool
) -> None:
    """A run that died before any step opened its row (its process killed at start, the vault key missing, the
    connection's lock held elsewhere) spent its run key: unrecorded, the connection waited for its next slot
    (a day, a week) with no trace of the failure. Recorded failed, it shows in the history and is retried."""
    cid = app_db.add("c1")
    run = create_run_for_test(
        dagster_instance, job_name=job_name, status=DagsterRunStatus.FAILURE, tags={CONNECTION_TAG: cid}
    )
    context = build_run_status_sensor_context(
        sensor_name="sync_run_failure",
        dagster_event=DagsterEvent(
            event_type_value=DagsterEventType.RUN_FAILURE.value,
            job_name=job_name,
            message="Steps failed: ['landing__Patient'].",
        ),
        dagster_instance=dagster_instance,
        dagster_run=run,
        resources={"app_db": AppDatabaseResource(url=app_db.url)},
    )
    SENSORS["sync_run_failure"](context)
    SENSORS["sync_run_failure"](context)  # evaluated again (a retried tick): still one row
    record = runs.get(app_db.db, run.run_id)
    if not recorded:
        assert record is None and failure_streaks(app_db.db) == {}
        return
    assert record is not None and record.status == "failed" and record.kind == kind
    assert record.error == "Steps failed: ['landing__Patient']."
    assert set(failure_streaks(app_db.db)) == {cid} and failure_streaks(app_db.db)[cid].failures == 1
    assert app_db.last_sync_at(cid) is None


def test_a_batch_that_failed_before_its_op_records_its_syncable_members(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """A batch run that died before opening its members' rows: each member that may sync is recorded failed on its
    own row (retried alone, with backoff); a member disconnected meanwhile is not."""
    good, gone = app_db.add("c1"), app_db.add("c2")
    with app_db.db.session() as session:
        row = session.get(Connection, gone)
        assert row is not None
        row.status = "disconnected"
        session.commit()
    run = create_run_for_test(
        dagster_instance,
        job_name=BATCH_SYNC_JOB,
        status=DagsterRunStatus.FAILURE,
        run_config=batch_run_config([good, gone]),
    )
    report_failure(app_db, dagster_instance, run)
    assert runs.get(app_db.db, batch_sync_run_id(run.run_id, gone)) is None
    record = runs.get(app_db.db, batch_sync_run_id(run.run_id, good))
    assert record is not None and record.status == "failed" and record.kind == "incremental"
    assert set(failure_streaks(app_db.db)) == {good}


def failed_parent_and_child(
    app_db: AppDb, instance: DagsterInstance, outcomes: dict[str, bool], child_tags: dict[str, str]
) -> tuple[DagsterRun, DagsterRun]:
    """A failed batch run whose members closed with ``outcomes`` (completed or not), and a failed re-execution of
    it with ``child_tags`` that died before its op: (parent, child)."""
    config = batch_run_config(list(outcomes))
    parent = create_run_for_test(instance, job_name=BATCH_SYNC_JOB, status=DagsterRunStatus.FAILURE, run_config=config)
    for cid, ok in outcomes.items():
        row = batch_sync_run_id(parent.run_id, cid)
        runs.ensure_run(app_db.db, cid, row, "incremental", tenant_id=app_db.tenant_id)
        finish_sync_run(app_db.db, row, cid, succeeded=ok, error=None if ok else "x")
    child = create_run_for_test(
        instance,
        job_name=BATCH_SYNC_JOB,
        status=DagsterRunStatus.FAILURE,
        run_config=config,
        parent_run_id=parent.run_id,
        root_run_id=parent.run_id,
        tags=child_tags,
    )
    return parent, child


@pytest.mark.parametrize("from_failure", [True, False], ids=["from-failure", "all"])
def test_a_batch_reexecution_that_failed_before_its_op_records_only_the_members_it_was_to_sync(
    app_db: AppDb, dagster_instance: DagsterInstance, from_failure: bool
) -> None:
    """A "Re-execute from failure" of a batch passes over the members its parent completed: when it dies before its
    op, those are not recorded failed (no false failure streak, no retry of a member that synced); the member that
    failed is, and a "Re-execute all" records both."""
    done, retried = app_db.add("c1"), app_db.add("c2")
    tags = {RESUME_RETRY_TAG: "true"} if from_failure else {}
    _, run = failed_parent_and_child(app_db, dagster_instance, {done: True, retried: False}, tags)
    report_failure(app_db, dagster_instance, run)
    passed_over = runs.get(app_db.db, batch_sync_run_id(run.run_id, done))
    assert (passed_over is None) if from_failure else (passed_over is not None and passed_over.status == "failed")
    record = runs.get(app_db.db, batch_sync_run_id(run.run_id, retried))
    assert record is not None and record.status == "failed"
    assert set(failure_streaks(app_db.db)) == ({retried} if from_failure else {done, retried})


def test_an_automatic_batch_retry_that_failed_before_its_op_leaves_the_held_members_rows(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """BDX-10: Dagster's automatic retry of a batch passes over a member its source holds (``not_before``, a
    throttle's time): when the retry dies before its op, no failed row is recorded for it, which would have been
    its newest row and, holding no ``not_before``, had the scheduler retry it after the backoff, before the
    source's time. A member the source did not hold is recorded failed as before."""
    held, other = app_db.add("c1"), app_db.add("c2")
    tags = {RESUME_RETRY_TAG: "true", RETRY_NUMBER_TAG: "1"}
    parent, retry = failed_parent_and_child(app_db, dagster_instance, {held: False, other: False}, tags)
    until = datetime.now(UTC) + timedelta(hours=1)
    runs.hold_until(app_db.db, batch_sync_run_id(parent.run_id, held), until)
    report_failure(app_db, dagster_instance, retry)
    assert runs.get(app_db.db, batch_sync_run_id(retry.run_id, held)) is None
    record = runs.get(app_db.db, batch_sync_run_id(retry.run_id, other))
    assert record is not None and record.status == "failed"
    assert source_holds(app_db.db)[held].until == until


def test_the_resume_and_retry_tags_are_dagsters() -> None:
    """``members_passed_over`` reads Dagster's own tags of a re-execution from failure and of its run retries."""
    assert RESUME_RETRY_TAG == DAGSTER_RESUME_RETRY_TAG
    assert RETRY_NUMBER_TAG == DAGSTER_RETRY_NUMBER_TAG


def test_a_failed_re_execution_of_a_full_resync_keeps_the_marks_its_runs_stored(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """BDX-28: a full resync forgets the marks once (``cursors.begin_full``, marker: the first run); a Dagster
    "re-execute from failure" of it does not again (its steps pass ``earlier_runs``). Its failure, recorded by this
    sensor, forgot them again: every type the runs had finished, its full search upserted, was searched whole
    once more by the next run. The sensor passes the run's lineage too."""
    cid = app_db.add("c1")
    first = create_run_for_test(
        dagster_instance, job_name="full_resync", status=DagsterRunStatus.FAILURE, tags={CONNECTION_TAG: cid}
    )
    assert cursors.begin_full(app_db.db, cid, first.run_id, PATIENT_TYPES)
    finished = datetime(2026, 1, 1, tzinfo=UTC)
    with app_db.db.locked_session() as session:  # a type the full run (or its re-execution) finished
        cursors.advance(session, cid, cursors.REST_STREAM, "Condition", first.run_id, finished)
        session.commit()
    again = create_run_for_test(
        dagster_instance,
        job_name="full_resync",
        status=DagsterRunStatus.FAILURE,
        tags={CONNECTION_TAG: cid},
        parent_run_id=first.run_id,
        root_run_id=first.run_id,
    )
    runs.ensure_run(app_db.db, cid, again.run_id, "full", tenant_id=app_db.tenant_id)
    report_failure(app_db, dagster_instance, again)
    assert cursors.get_mark(app_db.db, cid, cursors.REST_STREAM, "Condition") == finished
    record = runs.get(app_db.db, again.run_id)
    assert record is not None and record.status == "failed"
