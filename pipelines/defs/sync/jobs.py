"""Incremental REST sync of patient connections: the per-type assets, their jobs and run bookkeeping."""

from datetime import UTC, datetime

from dagster import (
    AssetSelection,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    define_asset_job,
    in_process_executor,
    run_status_sensor,
)

from engine import PATIENT_TYPES
from engine.batch_sync import batch_sync_run_id, close_batch_rows
from engine.run_outcome import CANCELED_PREFIX, RunTimes, finish_sync_run, record_unstarted_failure
from engine.run_tags import CONNECTION_TAG
from pipelines.defs._shared.metadata import without_freshness
from pipelines.defs._shared.run_control import earlier_runs, run_times
from pipelines.defs._shared.source_hold import close_held_retry, run_held_until
from pipelines.defs.sync.batch import (
    BATCH_SYNC_JOB,
    batch_connection_ids,
    incremental_sync_batch_job,
    members_passed_over,
)
from pipelines.defs.sync.reference_assets import build_reference_assets
from pipelines.defs.sync.type_assets import (
    LANDING_GROUP,
    WAREHOUSE_GROUP,
    build_type_assets,
    landing_op_name,
    selected_types,
    warehouse_key,
)
from pipelines.resources import AppDatabaseResource
from store import AppDatabase

__all__ = [
    "FULL_RESYNC_JOB",
    "INCREMENTAL_SYNC_JOB",
    "defs",
    "full_resync_job",
    "incremental_sync_job",
    "sync_run_ended",
]

INCREMENTAL_SYNC_JOB = "incremental_sync"
FULL_RESYNC_JOB = "full_resync"

type_assets = [*build_type_assets(PATIENT_TYPES), build_reference_assets()]
_all_types = without_freshness(AssetSelection.groups(LANDING_GROUP, WAREHOUSE_GROUP), warehouse_key("Patient"))

# In-process: steps share one process (DuckDB takes one writer at a time) and skip a Python start per step.
incremental_sync_job = define_asset_job(
    INCREMENTAL_SYNC_JOB,
    selection=_all_types,
    executor_def=in_process_executor,
    description="Every resource type changed since each type's high-water mark, landed then upserted.",
)

full_resync_job = define_asset_job(
    FULL_RESYNC_JOB,
    selection=_all_types,
    executor_def=in_process_executor,
    config={"ops": {landing_op_name(t): {"config": {"full": True}} for t in PATIENT_TYPES}},
    description="Every resource type in full, ignoring high-water marks (first sync, or after a data problem).",
)

# Jobs whose runs are syncs (a ``sync_runs`` row each, or one per member); ``bulk_export`` named here, not imported
# (its module imports this package's assets).
_SYNC_JOBS = frozenset({INCREMENTAL_SYNC_JOB, FULL_RESYNC_JOB, "bulk_export"})

_ENDED = {
    DagsterRunStatus.SUCCESS: (True, None),
    DagsterRunStatus.FAILURE: (False, "run failed"),
    DagsterRunStatus.CANCELED: (False, "run canceled"),
}


def _make_run_ended_sensor(status: DagsterRunStatus) -> RunStatusSensorDefinition:
    succeeded, error = _ENDED[status]

    @run_status_sensor(
        name=f"sync_run_{status.value.lower()}",
        run_status=status,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Records {status.value.lower()} ehrsync runs in sync_runs (and last_sync_at on success).",
    )
    def _ended(context: RunStatusSensorContext, app_db: AppDatabaseResource) -> None:
        run = context.dagster_run
        connection_id = run.tags.get(CONNECTION_TAG) or run.tags.get("dagster/partition")
        members = batch_connection_ids(run)  # a batch run: each member's row (those its op did not close)
        if not connection_id and not members:
            return
        # Dagster's run-end message names the failed steps; it carries no tokens or resource content.
        reason = (context.dagster_event.message or error) if not succeeded else None
        if status is DagsterRunStatus.CANCELED:  # a deliberate stop: marked so that it is not retried
            reason = f"{CANCELED_PREFIX}{reason}"
        times = run_times(context.instance, run.run_id)  # the run's own end, not this tick's
        with app_db.open() as db:
            if status is DagsterRunStatus.FAILURE:
                lineage = earlier_runs(context.instance, run)  # a re-execution's: its full intent is recorded
                at = times.started_at or times.finished_at or datetime.now(UTC)  # when its op would have decided
                done = members_passed_over(context.instance, run, db, at) if members else set()
                to_sync = [m for m in members if m not in done]  # a re-execution's own members, not those done
                # an automatic retry its source held sent nothing: a failed row would end the hold (source_hold)
                alone = None if connection_id and run_held_until(context.instance, run, db, at) else connection_id
                _record_unstarted(db, run, alone, to_sync, reason or "run failed", times, lineage)
                if connection_id:  # its row opened by a step that sent nothing: not a failure, the hold kept
                    close_held_retry(context.instance, run, db, times)
            if members:
                close_batch_rows(db, run.run_id, members, succeeded=succeeded, error=reason, times=times)
            if connection_id:
                finish_sync_run(
                    db, run.run_id, connection_id, succeeded=succeeded, error=reason and reason[:500], times=times
                )

    return _ended


def _record_unstarted(
    db: AppDatabase,
    run: DagsterRun,
    connection_id: str | None,
    members: list[str],
    reason: str,
    times: RunTimes,
    lineage: tuple[str, ...] = (),
) -> None:
    """A failed sync run (or batch) that never opened its rows: record them failed, to be retried. ``members``: those
    the batch was to sync: a re-execution passes over those completed earlier, an automatic retry those their source
    holds (``members_passed_over``); no failure of theirs. ``lineage``: the runs a re-execution carries on (a full
    resync's marks are not forgotten again: ``cursors.begin_full``)."""
    error = reason[:500]
    if members and run.job_name == BATCH_SYNC_JOB:
        for cid in members:
            record_unstarted_failure(db, batch_sync_run_id(run.run_id, cid), cid, full=False, error=error, times=times)
    if connection_id and run.job_name in _SYNC_JOBS:
        full = run.job_name == FULL_RESYNC_JOB
        chosen = selected_types(run) if full else None
        record_unstarted_failure(
            db, run.run_id, connection_id, full=full, error=error, times=times, earlier_runs=lineage, full_types=chosen
        )


sync_run_ended = [_make_run_ended_sensor(s) for s in _ENDED]

defs = Definitions(
    assets=type_assets,
    jobs=[incremental_sync_job, full_resync_job, incremental_sync_batch_job],
    sensors=sync_run_ended,
)
