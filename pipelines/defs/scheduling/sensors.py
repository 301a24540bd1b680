"""Scheduled incremental syncs, each connection at its own frequency and its source's window, and retries.

A sensor rather than a cron schedule, because the period is per connection (1 h to 7 days, from
``connections.sync_frequency_hours``) and the partitions are dynamic. Run keys name the due slot, so
repeated ticks never double a run; a connection with a run already queued or running is left alone (checked
for the due connections only, after the plan). Failures are read back ``streak_horizon`` only (``engine.retries``).
It ticks every minute so a failed sync (its first one too) is retried after its backoff (``engine.retries``),
within minutes rather than at the next slot; each failure is retried once (the run key names it).
Due patient connections of one EHR source share runs of ``incremental_sync_batch`` (at most
``EHRSYNC_SYNC_BATCH_SIZE`` each, run key from the members' own keys: ``engine.batch_plan``); a lone one, and every
Bulk connection, gets its own partitioned run as before. Members of a queued or running batch count as busy.
A due Bulk connection whose tenant has turned Bulk export off gets no run (it would fail ``bulk_not_enabled``,
sending nothing): counted, and named with the setting in the tick's log and skip reason (``engine.bulk_due``).
"""

from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
from dagster import (
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from engine.batch_plan import DueBatch, plan_batches
from engine.bulk_due import bulk_off_note, drop_bulk_refused, read_bulk_refusals
from engine.bulk_switch import BULK_SWITCH_PATH
from engine.connection_snapshots import NO_PATIENT, read_connections
from engine.planning import DueRun, drop_busy, plan_due_runs
from engine.retries import failure_streaks, source_holds, streak_horizon
from engine.run_tags import connection_run_tags
from pipelines.defs._shared.partitions import partition_sets
from pipelines.defs._shared.run_control import busy_among
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB, bulk_export_job
from pipelines.defs.sync.batch import (
    BATCH_SYNC_JOB,
    batch_run_config,
    batch_run_tags,
    busy_in_batches,
    incremental_sync_batch_job,
)
from pipelines.defs.sync.jobs import INCREMENTAL_SYNC_JOB, incremental_sync_job
from pipelines.resources import AppDatabaseResource, RetryPolicyResource, SyncPolicyResource

__all__ = ["SCHEDULE_INTERVAL_S", "defs", "scheduled_syncs_sensor", "skip_reason", "tick_cursor"]

SCHEDULE_INTERVAL_S = 60
_INVALID = (
    "scheduled syncs: %d Bulk connection(s) requested although their tenant's %s is neither true nor false: each"
    " run fails tenant_setting_invalid naming it until the setting is fixed"
)


def tick_cursor(evaluated_at: datetime, requested: int, retries: int = 0) -> str:
    """The cursor: when the sensor last looked and how many runs (retries among them) it asked for (in the UI)."""
    return orjson.dumps({"evaluated_at": evaluated_at.isoformat(), "requested": requested, "retries": retries}).decode()


def _request(due: DueRun) -> RunRequest:
    conn = due.connection
    return RunRequest(
        run_key=due.run_key,
        job_name=BULK_EXPORT_JOB if conn.is_bulk else INCREMENTAL_SYNC_JOB,
        partition_key=conn.id,
        tags=connection_run_tags(conn, "retry" if due.retry else "schedule"),
    )


def _batch_request(batch: DueBatch) -> RunRequest:
    """One run for the batch: no partition (its members are in the run config), tagged with its source."""
    trigger = "retry" if batch.retries == len(batch.members) else "schedule"
    return RunRequest(
        run_key=batch.run_key,
        job_name=BATCH_SYNC_JOB,
        run_config=batch_run_config(batch.connection_ids),
        tags=batch_run_tags(batch.source, len(batch.members), trigger),
    )


@sensor(
    name="scheduled_syncs",
    minimum_interval_seconds=SCHEDULE_INTERVAL_S,
    jobs=[incremental_sync_job, bulk_export_job, incremental_sync_batch_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests incremental syncs (Bulk exports for backend/group) for connections that are due, and "
    "retries failed syncs with backoff.",
)
def scheduled_syncs_sensor(
    context: SensorEvaluationContext,
    app_db: AppDatabaseResource,
    policy: SyncPolicyResource,
    retry: RetryPolicyResource,
) -> SensorResult:
    now = datetime.now(UTC)
    backoff = retry.backoff()
    sets = partition_sets(context.instance)  # a connection runs only once its key is in its own set
    with app_db.open() as db:
        connections = read_connections(db)
        streaks = failure_streaks(db, since=now - streak_horizon(backoff))
        holds = source_holds(db, since=now - streak_horizon(backoff))
    # Which connections are due first; then whether those few have a run queued or in progress.
    candidates, tally = plan_due_runs(
        now,
        connections,
        partitions=sets,
        busy=set(),
        windows=policy.windows(),
        failures=streaks,
        backoff=backoff,
        holds=holds,
    )
    busy: set[str] = set()
    invalid = 0
    if candidates:
        with app_db.open() as db:
            # the due Bulk connections' tenant switches, in one query: a run the switch refuses is not requested,
            # and its connection (due at every tick while the switch is off) is not looked up in the run queue
            refusals, unread = read_bulk_refusals(db, candidates)
            candidates, invalid = drop_bulk_refused(candidates, refusals, tally)
            # members of queued or running batch runs (of a re-execution, those it will sync)
            busy = busy_in_batches(context.instance, db) if candidates else set()
        if unread:  # a database error: every due run is requested, each checks its own switch (engine.bulk_due)
            context.log.warning("%s", unread)
    busy |= busy_among(context.instance, {d.connection.id for d in candidates}) if candidates else set()
    if invalid:  # requested anyway: a misconfiguration, kept where failures are watched (engine.bulk_due)
        context.log.warning(_INVALID, invalid, BULK_SWITCH_PATH)
    due = drop_busy(candidates, busy, tally)
    retries = sum(1 for d in due if d.retry)
    alone, batches = plan_batches(due, policy.sync_batch_size)
    context.log.info(
        "scheduled syncs: %d due (%d retries) in %d runs (%d batches); not requested: %s%s",
        len(due),
        retries,
        len(alone) + len(batches),
        len(batches),
        _codes(tally),
        bulk_off_note(tally),
    )
    requests = [_request(d) for d in alone] + [_batch_request(b) for b in batches]
    cursor = tick_cursor(now, len(due), retries)
    return SensorResult(run_requests=requests, skip_reason=None if requests else skip_reason(tally), cursor=cursor)


def _codes(tally: Mapping[str, int]) -> dict[str, int]:
    """The tally by its plain codes (``not_yet``...): its ``DueReason`` keys would print as Python reprs."""
    return {str(reason): n for reason, n in sorted(tally.items())}


def skip_reason(tally: Mapping[str, int]) -> str:
    """Why a tick requested nothing, as the UI shows it: the tally, and connections that never sync by design."""
    text = f"no run requested; not requested: {_codes(tally) or 'none'}"
    if tally.get(NO_PATIENT):
        text += f" ({tally[NO_PATIENT]} without a patient: they file notes but never sync, by design)"
    return text + bulk_off_note(tally)


defs = Definitions(sensors=[scheduled_syncs_sensor])
