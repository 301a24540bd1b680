"""A connection's own sync run and the time its source said to come back (``engine.run_holds``).

A step of an ``incremental_sync`` run stopped by a source-wide throttle notes the time on the run's row; the
run's later steps, and Dagster's automatic retry of the run (started the moment it failed, by no operator), send
nothing before it. An operator's re-execution is tried at once, as a batch's is (the operator asked).
"""

from __future__ import annotations

from datetime import datetime

from dagster import DagsterInstance, DagsterRun, Failure

from engine.run_holds import held_until
from pipelines.defs._shared.run_control import automatic_retry, earlier_runs
from store import AppDatabase

__all__ = ["SourceHeldFailure", "run_held_until", "stop_if_held"]


class SourceHeldFailure(Failure):
    """The step sent nothing: the connection's source said not to ask before a later time."""


def run_held_until(instance: DagsterInstance, run: DagsterRun, db: AppDatabase, at: datetime) -> datetime | None:
    """The time the connection's source holds this run's sync until (None: not held): noted by one of its own
    steps, or, on an automatic retry, by the newest run it carries on (a person's re-execution is not held by
    those)."""
    rows = (run.run_id, *earlier_runs(instance, run)) if automatic_retry(run) else (run.run_id,)
    return held_until(db, rows, at)


def stop_if_held(
    instance: DagsterInstance, run: DagsterRun, db: AppDatabase, connection_id: str, step: str, at: datetime
) -> None:
    """Fail the step before any request when the source holds the run (``SourceHeldFailure``, naming the time)."""
    until = run_held_until(instance, run, db, at)
    if until is not None:
        raise SourceHeldFailure(
            description=f"{step} of connection {connection_id} not tried: its source is held until "
            f"{until:%Y-%m-%dT%H:%M:%SZ} (throttled, out of quota or unreachable, as an earlier step or run found: "
            "see its failure; sync_runs.not_before); the scheduler asks for it then"
        )
