"""What stops a deletion reconciliation run (BDX-31) at the type that met it: a failure no later type gets past.

Each type would only fail the same way, or wait for the lock again: a grant no longer usable, an EHR that cannot
be reached (no connection opened to it), a throttle longer than ehrsync waits, a landing disk too full, another
process refreshing the grant for longer than a refresh takes (each type would wait the 300 s again), and the
engine's own refusals (the connection gone or not syncable, another run holding its lock). Met in a type's id
listing, the type is not reconciled; met while confirming its deletions or reading back what the searches missed,
what it confirmed gone is tombstoned and counted; either way the types after it are not reached this run.

Any other failure is the type's own and is recorded on it, the next type running: a ``SyncError`` too (a landing
of that type, its handoff), the step budget, a 5xx or a dropped read. Only the engine's refusals named above stop
the run, not every ``SyncError``: one type's failure must not leave every later type's deletions live for a week.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.batch_defer import unopened_origin
from engine.connection_lock import ConnectionBusyError
from engine.errors import ConnectionNotFoundError, ConnectionNotSyncableError
from engine.request_stops import EVERY_REQUEST_WOULD_MEET, LANDING_DISK_FULL

__all__ = ["RunStop", "run_stop"]

#: the connection gone or not syncable, or another run holding its lock: every later type would meet it again
_REFUSES_EVERY_TYPE = (ConnectionNotFoundError, ConnectionNotSyncableError, ConnectionBusyError)
_STOPS_RUN = (*EVERY_REQUEST_WOULD_MEET, *LANDING_DISK_FULL, *_REFUSES_EVERY_TYPE)


@dataclass(frozen=True)
class RunStop:
    """A failure no later type gets past: its ``code`` (what the reports name) and the failure itself, whose
    source-wide throttle, when it is one, the run notes (``engine.run_holds.note_connection_throttle``)."""

    code: str
    cause: BaseException


def run_stop(exc: BaseException) -> RunStop | None:
    """``exc`` as a :class:`RunStop` when no later type gets past it (the run stops after this type), else None."""
    if isinstance(exc, _STOPS_RUN) or unopened_origin(exc) is not None:
        return RunStop(str(getattr(exc, "code", type(exc).__name__)), exc)
    return None
