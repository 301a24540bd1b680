"""What stops a whole batch run (``engine.batch_sync``): a failure every later member would meet, whatever its source.

A landing disk too full (a landing file's write refused ENOSPC or EDQUOT, ``warehouse.LandingDiskFullError``; a
Bulk or attachment download's free-space check, ``InsufficientDiskSpaceError``) is this machine's, not the EHR's:
every member lands on the same disk. The member that met it stops there (its later types would meet it too) and the
batch does:
the later members are not tried (no request, cursors and landing untouched), their rows closed ``failed`` naming
the disk and the member that met it, so each is retried with backoff once there is room. Trying them in turn would
send each one's searches to the EHR only to fail each on the same disk.
"""

from __future__ import annotations

from engine.request_stops import LANDING_DISK_FULL
from engine.run_outcome import finish_sync_run
from store import AppDatabase

__all__ = ["NOT_TRIED_PREFIX", "not_tried", "short_error", "stops_batch"]

#: How the row of a member a stopped batch did not try begins.
NOT_TRIED_PREFIX = "not tried: the landing disk is full"
#: Most characters of a member's error its ``sync_runs`` row keeps.
_MAX_ERROR = 500


def short_error(error: str | None) -> str | None:
    """``error`` cut to what a member's row keeps."""
    return error[:_MAX_ERROR] if error else None


def stops_batch(exc: BaseException) -> str | None:
    """Why no later member of the batch is tried after ``exc`` (its code and message), else None."""
    if not isinstance(exc, LANDING_DISK_FULL):
        return None
    return f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"


def not_tried(db: AppDatabase, sync_run_id: str, connection_id: str, met_by: str, why: str) -> str:
    """Close the row of a member not tried (``met_by`` stopped the batch with ``why``) as failed; the error."""
    error = f"{NOT_TRIED_PREFIX} ({why.split(':', 1)[0]}, met by connection {met_by}): {why}"
    finish_sync_run(db, sync_run_id, connection_id, succeeded=False, error=short_error(error))
    return error
