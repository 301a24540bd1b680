"""One connection's weekly deletion reconciliation (BDX-31), type by type, each type isolated as a sync's are.

A type whose reconcile fails (its id listing answered 5xx after the retries, came back incomplete, or outlived
the type's step budget) is reported failed and not reconciled this run, nothing of it tombstoned (a partial
listing never reads as deletions); the types after it are still reconciled, so one type the EHR keeps failing
does not hold back the others every week. Each type spends at most one step budget (``EHRSYNC_STEP_BUDGET_S``:
listing, confirmation and read-back together), so a server can make a run spend at most one budget per type.

What no later type would get past stops the run (the rest reported not reconciled): a grant no longer usable, an
EHR that cannot be reached, a throttle longer than ehrsync waits, a landing disk too full, and the engine's own
refusals (the connection gone or not syncable, another run holding its lock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from connectors.errors import (
    EhrUnreachableError,
    InsufficientDiskSpaceError,
    NeedsReauthError,
    RateLimitedError,
    loggable_message,
)
from engine.batch_defer import unopened_origin
from engine.deletes import ReconcileReport, reconcile_deletes
from engine.environment import SyncEnvironment
from engine.errors import SyncError

__all__ = ["reconcile_types"]

_log = logging.getLogger(__name__)
# Failures no later type gets past (each type would only fail the same way, or wait for the lock again).
_STOPS_RUN = (NeedsReauthError, EhrUnreachableError, RateLimitedError, InsufficientDiskSpaceError, SyncError)


def reconcile_types(
    env: SyncEnvironment,
    connection_id: str,
    types: Sequence[str],
    *,
    run_id: str,
    on_report: Callable[[ReconcileReport], None] | None = None,
) -> list[ReconcileReport]:
    """Reconcile each of ``types`` (``engine.deletes.reconcile_deletes``), one report each in order, ``error``
    set on those not reconciled; ``on_report`` is called with each type's report as it ends. Never raises for a
    type's failure; one that stops the run is reported on its type, and the types after it as not reached."""
    reports: list[ReconcileReport] = []
    for index, resource_type in enumerate(types):
        stopped = None
        try:
            report = reconcile_deletes(env, connection_id, resource_type, run_id=run_id)
        except Exception as exc:  # the isolation boundary: this type's failure only, unless nothing gets past it
            code = getattr(exc, "code", type(exc).__name__)
            report = ReconcileReport(resource_type, error=f"{code}: {loggable_message(exc)}")
            _log.warning("reconciling %s of %s failed: %s", resource_type, connection_id, report.error)
            if isinstance(exc, _STOPS_RUN) or unopened_origin(exc) is not None:
                stopped = f"not reached: the run stopped at {resource_type} ({code})"
        reports.append(report)
        if on_report is not None:
            on_report(report)
        if stopped is not None:
            reports += [ReconcileReport(t, error=stopped) for t in types[index + 1 :]]
            break
    return reports
