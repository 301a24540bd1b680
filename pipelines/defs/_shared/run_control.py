"""Reading and stopping a connection's runs on the Dagster instance (used by the sensors)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime

from dagster import DagsterError, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster_shared.check import CheckError

from engine.run_outcome import RunTimes
from engine.run_tags import CONNECTION_TAG

__all__ = [
    "BUSY_LOOKUP_MAX",
    "BUSY_SCAN_PAGE_SIZE",
    "PENDING_STATUSES",
    "RESUME_RETRY_TAG",
    "RETRY_NUMBER_TAG",
    "RUNNING_STATUSES",
    "automatic_retry",
    "busy_among",
    "busy_connections",
    "earlier_runs",
    "run_times",
    "stop_connection_runs",
]

logger = logging.getLogger(__name__)

PENDING_STATUSES = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)
RUNNING_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
BUSY_SCAN_PAGE_SIZE = 1000
# Up to this many candidates are looked up one by one (one indexed tag query each); more, and one paged scan of
# every run in progress is cheaper.
BUSY_LOOKUP_MAX = 25
# Re-executions of re-executions followed back at most this far (a parent pruned by retention ends the chain).
MAX_LINEAGE = 100
# Dagster's tag on a "Re-execute from failure" (the UI's, and its run retries'; ``RESUME_RETRY_TAG`` in
# ``dagster._core.storage.tags``); a "Re-execute all" does not carry it, not even from a re-execution that did.
RESUME_RETRY_TAG = "dagster/is_resume_retry"
# Dagster's tag on its automatic run retries only (the run-retry daemon: ``run_retries``, ``dagster/max_retries``;
# ``RETRY_NUMBER_TAG``); the UI's re-executions drop it from the parent's tags.
RETRY_NUMBER_TAG = "dagster/retry_number"
_IN_PROGRESS = [*PENDING_STATUSES, *RUNNING_STATUSES, DagsterRunStatus.CANCELING]


def busy_connections(instance: DagsterInstance, *, page_size: int | None = None) -> set[str]:
    """Connection ids with a run queued or in progress (any job), from the runs' ``ehrsync/connection`` tag.

    Every queued, starting or started run is read, page by page (newest first, each page continuing after the
    last run id of the one before), however long the backlog: a scan cut at a fixed number of runs would miss
    the oldest queued run of a connection and let the scheduler request a second one. ``page_size`` defaults
    to ``BUSY_SCAN_PAGE_SIZE``.
    """
    page_size = BUSY_SCAN_PAGE_SIZE if page_size is None else page_size
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    in_progress = RunsFilter(statuses=_IN_PROGRESS)
    busy: set[str] = set()
    after: str | None = None
    while True:
        page = instance.get_runs(filters=in_progress, cursor=after, limit=page_size)
        busy.update(run.tags[CONNECTION_TAG] for run in page if CONNECTION_TAG in run.tags)
        if len(page) < page_size:
            return busy
        after = page[-1].run_id


def busy_among(instance: DagsterInstance, candidates: Collection[str], *, page_size: int | None = None) -> set[str]:
    """Those of ``candidates`` (the connections due this tick) with a run queued or in progress.

    A few candidates are looked up one by one (``ehrsync/connection`` tag, in-progress statuses, one run each), so
    a tick reads nothing about the connections that are not due; many, and ``busy_connections`` pages through
    every run in progress once instead (same answer, fewer queries).
    """
    if not candidates:
        return set()
    if len(candidates) > BUSY_LOOKUP_MAX:
        return busy_connections(instance, page_size=page_size) & set(candidates)
    return {
        cid
        for cid in candidates
        if instance.get_runs(filters=RunsFilter(tags={CONNECTION_TAG: cid}, statuses=_IN_PROGRESS), limit=1)
    }


def stop_connection_runs(instance: DagsterInstance, connection_id: str) -> int:
    """Cancel queued runs and ask running ones to terminate; returns how many runs were stopped or signalled.

    A queued run is cancelled in storage directly (whatever the coordinator); a started one goes through the
    run coordinator, which asks the launcher to terminate it. A launcher that cannot terminate is logged.
    """
    runs = instance.get_runs(
        filters=RunsFilter(tags={CONNECTION_TAG: connection_id}, statuses=[*PENDING_STATUSES, *RUNNING_STATUSES])
    )
    stopped = 0
    for run in runs:
        if run.status in PENDING_STATUSES:
            instance.report_run_canceling(run, message="ehrsync: connection disconnected or disabled")
            instance.report_run_canceled(run, message="ehrsync: connection disconnected or disabled")
            stopped += 1
            continue
        try:
            terminated = instance.run_coordinator.cancel_run(run.run_id)
        # An unreachable code server, or a launcher that cannot terminate at all (the in-memory one raises
        # CheckError), must not stop the sensor's other work.
        except (DagsterError, CheckError, NotImplementedError) as exc:
            logger.warning("terminating run %s of connection %s failed: %s", run.run_id, connection_id, exc)
            continue
        if terminated:
            stopped += 1
        else:
            logger.warning("run %s of connection %s did not confirm termination", run.run_id, connection_id)
    return stopped


def _instant(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def run_times(instance: DagsterInstance, run_id: str) -> RunTimes:
    """The run's own start and end (Dagster's run record), not the moment somebody looked at it."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return RunTimes()
    return RunTimes(_instant(record.start_time), _instant(record.end_time))


def earlier_runs(instance: DagsterInstance, run: DagsterRun) -> tuple[str, ...]:
    """The runs a re-execution carries on, newest first (empty for a first run): "Re-execute from failure" runs
    only the failed steps, so a step may take over work an earlier run's steps left (a pending landing)."""
    found: list[str] = []
    parent = run.parent_run_id
    while parent is not None and parent not in found and len(found) < MAX_LINEAGE:
        found.append(parent)
        record = instance.get_run_by_id(parent)
        parent = record.parent_run_id if record is not None else None
    if run.root_run_id is not None and run.root_run_id not in found:
        found.append(run.root_run_id)
    return tuple(found)


def automatic_retry(run: DagsterRun) -> bool:
    """Whether Dagster's run-retry daemon started the run (no operator asked: it starts the moment its parent
    failed), not a person's re-execution."""
    return RETRY_NUMBER_TAG in run.tags
