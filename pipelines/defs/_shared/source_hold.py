"""A connection's own sync run and the time its source said to come back (``engine.run_holds``).

A step of an ``incremental_sync`` run stopped by a source-wide throttle notes the time on the run's row; the
run's later steps, and Dagster's automatic retry of the run (started the moment it failed, by no operator), send
nothing before it. An operator's re-execution is tried at once, as a batch's is (the operator asked). A deletion
reconciliation run, which has no row of its own, honours the hold of the connection's newest row: the one the
scheduler reads (``stop_if_connection_held``), unless a person asked for it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRun, Failure

from engine import runs
from engine.run_holds import connection_held_until, held_until
from engine.run_outcome import RunTimes
from engine.run_tags import TRIGGER_TAG
from pipelines.defs._shared.run_control import automatic_retry, earlier_runs
from store import AppDatabase

__all__ = ["SourceHeldFailure", "close_held_retry", "run_held_until", "stop_if_connection_held", "stop_if_held"]


class SourceHeldFailure(Failure):
    """The step sent nothing: the connection's source said not to ask before a later time."""


def run_held_until(instance: DagsterInstance, run: DagsterRun, db: AppDatabase, at: datetime) -> datetime | None:
    """The time the connection's source holds this run's sync until (None: not held): noted by one of its own
    steps, or, on an automatic retry, by the newest run it carries on (a person's re-execution is not held by
    those). The retry's own row, opened by a step that sent nothing (a warehouse step upserting its parent's
    landing), notes no time of its own and does not end its lineage's hold."""
    own = held_until(db, (run.run_id,), at)
    lineage = held_until(db, earlier_runs(instance, run), at) if automatic_retry(run) else None
    return max((t for t in (own, lineage) if t is not None), default=None)


def _held_message(what: str, until: datetime, then: str = "the scheduler asks for it then") -> str:
    return (
        f"{what} not tried: its source is held until {until:%Y-%m-%dT%H:%M:%SZ} (throttled, out of quota or "
        f"unreachable, as an earlier step or run found: see its failure; sync_runs.not_before); {then}"
    )


def stop_if_held(
    instance: DagsterInstance, run: DagsterRun, db: AppDatabase, connection_id: str, step: str, at: datetime
) -> None:
    """Fail the step before any request when the source holds the run (``SourceHeldFailure``, naming the time)."""
    until = run_held_until(instance, run, db, at)
    if until is not None:
        raise SourceHeldFailure(description=_held_message(f"{step} of connection {connection_id}", until))


def stop_if_connection_held(
    run: DagsterRun, scheduled: str, db: AppDatabase, connection_id: str, what: str, then: str, at: datetime
) -> None:
    """Fail before any request when the connection's newest run noted a hold still to come (``SourceHeldFailure``
    naming the time, and ``then``: when it is tried again); only a run no person asked for: its schedule's (its
    ``ehrsync/trigger`` is ``scheduled``, not a re-execution) or Dagster's automatic retry. A person's run
    (``ehrsync reconcile``, a launch or re-execution from the UI) is tried at once, as a person's sync is."""
    by_schedule = run.parent_run_id is None and run.tags.get(TRIGGER_TAG) == scheduled
    until = connection_held_until(db, connection_id, at) if by_schedule or automatic_retry(run) else None
    if until is not None:
        raise SourceHeldFailure(description=_held_message(f"{what} of connection {connection_id}", until, then))


def close_held_retry(instance: DagsterInstance, run: DagsterRun, db: AppDatabase, times: RunTimes) -> bool:
    """Close ``deferred``, with its lineage's time, the row of an automatic retry its source held to the end (its
    landing sent nothing) that a step opened anyway (a warehouse step upserting its parent's landing): closed
    ``failed`` with no time, as the connection's newest row it ended the hold and lengthened the failure streak.
    A retry that met the throttle itself (its own row noted a time) failed on it, and stays so."""
    end = times.finished_at or datetime.now(UTC)
    record = runs.get(db, run.run_id)
    if not automatic_retry(run) or record is None or record.status not in ("queued", "running"):
        return False
    if held_until(db, (run.run_id,), end) is not None:
        return False
    until = held_until(db, earlier_runs(instance, run), end)
    if until is None:
        return False
    runs.defer(db, run.run_id, f"deferred: {_held_message('the run', until)}", until, finished_at=times.finished_at)
    return True
