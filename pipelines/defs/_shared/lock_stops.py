"""A connection's own sync run one of whose steps waited out the grant's refresh lock: the later steps stop at once.

Another process holding the grant's refresh (SQLite app databases) past the lock's timeout
(``store.RefreshLockTimeoutError``, 300 s) made each step that needed a token wait that long again, holding the
connection's lock: an ``incremental_sync`` run of eleven types waited the timeout eleven times. The engine stops the
rest of a step that met it (``engine.request_stops``); across landing steps, the run's own event log is the marker:
a later one that finds an earlier step of the same run failed so sends nothing and fails naming that wait (the
reference step runs only after every type's upsert succeeded, so never after such a failure). No
``sync_runs`` hold: the EHR named no time (the scheduler's retry backoff, 5 min at first, decides), and the next run
tries again.
"""

from __future__ import annotations

from dagster import DagsterEventType, DagsterInstance, Failure
from dagster_shared.error import SerializableErrorInfo

from store import RefreshLockTimeoutError

__all__ = ["RefreshLockStopFailure", "stop_if_lock_waited_out"]

_CAUSE_DEPTH = 8  # Dagster's step error → the step's exception → its causes: bounded in case a chain loops


class RefreshLockStopFailure(Failure):
    """The step sent nothing: an earlier step of the run waited out the grant's refresh lock."""


def _lock_timeout(error: SerializableErrorInfo | None) -> str | None:
    """The ``RefreshLockTimeoutError`` message in ``error``'s chain (what Dagster recorded of a step's failure)."""
    for _ in range(_CAUSE_DEPTH):
        if error is None:
            return None
        if error.cls_name == RefreshLockTimeoutError.__name__:
            return error.message.strip().split(": ", 1)[-1]
        error = error.cause or error.context
    return None


def stop_if_lock_waited_out(instance: DagsterInstance, run_id: str, what: str) -> None:
    """Fail ``what`` (a step) before any request when an earlier step of run ``run_id`` failed waiting out the
    grant's refresh lock (``RefreshLockStopFailure``, naming that step and the wait)."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data if event is not None else None
        waited = _lock_timeout(data.error if data is not None else None)
        if event is not None and waited is not None:
            raise RefreshLockStopFailure(
                description=f"{what} not tried: step {event.step_key} of this run waited out the grant's refresh lock "
                f"(refresh_lock_timeout: {waited}); each later step would wait as long again, holding the "
                "connection's lock, so the run stops here; the next run tries again"
            )
