"""The ``analyst_views`` job and the sensor that runs it after syncs succeed, debounced.

The sensor reads the run-success events of the sync jobs (incremental, full, batch, bulk, reconciliation: every
job that changes the warehouse), and the run-failure events of batch runs (a batch fails when any member failed,
yet every other member's sync committed), stored after its cursor, event storage ids (what Dagster's run status sensors
follow: ids grow in the order events are stored, where run update times have only whole seconds). Many
connections finishing within a minute make one refresh, not one each: a refresh is requested at most every
``EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS``, and the runs that ended meanwhile wait in the cursor for the next one.
The run key names the newest event answered, so a tick evaluated twice (its cursor not yet saved) asks for the
same run and Dagster drops the duplicate.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson
from dagster import (
    AssetSelection,
    DagsterEventType,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    in_process_executor,
    sensor,
)

from pipelines.analyst_resource import AnalystResource
from pipelines.defs.analyst.assets import ANALYST_GROUP, analyst_views
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB
from pipelines.defs.maintenance.jobs import RECONCILE_JOB
from pipelines.defs.sync.batch import BATCH_SYNC_JOB
from pipelines.defs.sync.jobs import FULL_RESYNC_JOB, INCREMENTAL_SYNC_JOB

__all__ = [
    "ANALYST_VIEWS_JOB",
    "PARTIAL_JOBS",
    "SENSOR_TICK_S",
    "SYNC_JOBS",
    "AnalystCursor",
    "Decision",
    "analyst_views_job",
    "analyst_views_sensor",
    "defs",
    "plan_refresh",
]

ANALYST_VIEWS_JOB = "analyst_views"
SYNC_JOBS = (INCREMENTAL_SYNC_JOB, FULL_RESYNC_JOB, BATCH_SYNC_JOB, BULK_EXPORT_JOB, RECONCILE_JOB)
# Jobs whose failed runs changed the warehouse too: a batch run fails when one member failed, the others committed.
PARTIAL_JOBS = (BATCH_SYNC_JOB,)
SENSOR_TICK_S = 30
_PAGE = 500
_RunEnd = Literal[DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE]

analyst_views_job = define_asset_job(
    ANALYST_VIEWS_JOB,
    selection=AssetSelection.groups(ANALYST_GROUP),
    executor_def=in_process_executor,
    description="Refresh the analyst views and publish the analyst snapshot (DuckDB), with their checks.",
)


@dataclass(frozen=True)
class AnalystCursor:
    """``seen``: storage id of the newest run-success event already answered (a refresh requested for it, or no
    sync job's); ``requested_at``: when the last refresh was requested (epoch seconds); ``seen_failed``: the same
    as ``seen`` for run-failure events (batch runs, ``PARTIAL_JOBS``)."""

    seen: int = 0
    requested_at: float = 0.0
    seen_failed: int = 0

    def dump(self) -> str:
        return orjson.dumps(
            {"seen": self.seen, "requested_at": self.requested_at, "seen_failed": self.seen_failed}
        ).decode()

    @classmethod
    def load(cls, raw: str | None) -> "AnalystCursor":
        """The stored cursor; none, or one this version cannot read, starts from scratch (one extra refresh)."""
        try:
            data = orjson.loads(raw or "{}")
            return cls(
                seen=int(data.get("seen", 0)),
                requested_at=float(data.get("requested_at", 0.0)),
                seen_failed=int(data.get("seen_failed", 0)),
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return cls()


@dataclass(frozen=True)
class Decision:
    """What a tick does: request a run under ``run_key`` (``None``: skip, saying ``reason``) and the new cursor."""

    run_key: str | None
    cursor: AnalystCursor
    reason: str


def plan_refresh(
    cursor: AnalystCursor,
    newest_sync: int | None,
    scanned: int,
    now: float,
    min_interval_s: float,
    scanned_failed: int = 0,
) -> Decision:
    """Pure: ``newest_sync`` is the newest sync run-success event (or batch run-failure event) after the cursor,
    ``scanned`` the newest run-success event of any job read, ``scanned_failed`` the newest run-failure event read.
    A refresh is asked for when a sync changed the warehouse and the debounce interval has passed; debounced, the
    cursor stays, so those runs are answered by the next refresh."""
    failed = max(scanned_failed, cursor.seen_failed)
    if newest_sync is None:
        kept = AnalystCursor(max(scanned, cursor.seen), cursor.requested_at, failed)
        return Decision(None, kept, "no sync run succeeded")
    if cursor.requested_at + min_interval_s > now:
        return Decision(None, cursor, f"debounced: a refresh was requested {now - cursor.requested_at:.0f} s ago")
    seen = max(scanned, cursor.seen)
    return Decision(f"analyst_views:{newest_sync}", AnalystCursor(seen, now, failed), "sync runs succeeded")


def newest_event(
    context: SensorEvaluationContext,
    after: int,
    event_type: _RunEnd = DagsterEventType.RUN_SUCCESS,
    jobs: tuple[str, ...] = SYNC_JOBS,
) -> tuple[int | None, int]:
    """(storage id of the newest ``event_type`` event of one of ``jobs`` after ``after``, that of the newest of
    any job).

    One run-status event type (one per run), read in pages; the storage cannot filter by job name (SQLite)."""
    newest: int | None = None
    scanned = after
    while True:
        records = context.instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=scanned or None),
            limit=_PAGE,
            ascending=True,
        ).records
        for record in records:
            scanned = record.storage_id
            if record.event_log_entry.job_name in jobs:
                newest = record.storage_id
        if len(records) < _PAGE:
            return newest, scanned


@sensor(
    name="analyst_views_sensor",
    minimum_interval_seconds=SENSOR_TICK_S,
    job=analyst_views_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="Refreshes the analyst views after sync runs succeed (at most every "
    "EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS).",
)
def analyst_views_sensor(context: SensorEvaluationContext, analyst: AnalystResource) -> SensorResult:
    cursor = AnalystCursor.load(context.cursor)
    now = datetime.now(UTC).timestamp()
    succeeded, scanned = newest_event(context, cursor.seen)
    failed, scanned_failed = newest_event(context, cursor.seen_failed, DagsterEventType.RUN_FAILURE, PARTIAL_JOBS)
    newest = max((i for i in (succeeded, failed) if i is not None), default=None)
    decision = plan_refresh(cursor, newest, scanned, now, analyst.min_interval_s, scanned_failed)
    if decision.run_key is None:
        return SensorResult(skip_reason=decision.reason, cursor=decision.cursor.dump())
    context.log.info("analyst views: %s, requesting a refresh", decision.reason)
    return SensorResult(run_requests=[RunRequest(run_key=decision.run_key)], cursor=decision.cursor.dump())


defs = Definitions(assets=[analyst_views], jobs=[analyst_views_job], sensors=[analyst_views_sensor])
