"""One connection's weekly deletion reconciliation (BDX-31), type by type, each type isolated as a sync's are.

A type whose reconcile fails (its id listing answered 5xx after the retries, came back incomplete, or outlived
the type's step budget) is reported failed and not reconciled this run, nothing of it tombstoned (a partial
listing never reads as deletions); the types after it are still reconciled, so one type the EHR keeps failing
does not hold back the others every week. Each type spends at most one step budget (``EHRSYNC_STEP_BUDGET_S``:
listing, confirmation and read-back together), so a server can make a run spend at most one budget per type.

What no later type would get past (``engine.reconcile_stops``) stops the run at the type that met it, in its
listing (raised) or while confirming or reading back (``ReconcileReport.stopped``, its tombstones counted); the
types after it are reported not reached. When that failure is a throttle of the whole source (a long Retry-After,
a spent quota, an unreachable EHR: ``engine.batch_defer``), its time is noted on the connection's newest
``sync_runs`` row (``engine.run_holds.note_connection_throttle``), so the scheduler and the next weekly
reconcile send nothing before it, as for a sync's landing step; ``on_hold`` is told, so the weekly schedule can
ask for the week's run again once it ends (the types not reached would otherwise wait a week more). A run that
another run holding the connection's lock stopped (``ConnectionBusyError``: a sync of it) tells ``on_busy``, so
the schedule can ask again soon for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from engine.batch_defer import SourceThrottle
from engine.connection_lock import ConnectionBusyError
from engine.deletes import ReconcileReport, reconcile_deletes
from engine.environment import SyncEnvironment
from engine.reconcile_stops import run_stop
from engine.run_holds import note_connection_throttle

__all__ = ["reconcile_types"]

_log = logging.getLogger(__name__)


def reconcile_types(
    env: SyncEnvironment,
    connection_id: str,
    types: Sequence[str],
    *,
    run_id: str,
    on_report: Callable[[ReconcileReport], None] | None = None,
    on_hold: Callable[[SourceThrottle], None] | None = None,
    on_busy: Callable[[], None] | None = None,
) -> list[ReconcileReport]:
    """Reconcile each of ``types`` (``engine.deletes.reconcile_deletes``), one report each in order, ``error``
    set on those not reconciled; ``on_report`` is called with each type's report as it ends, ``on_hold`` with the
    source-wide throttle that stopped the run, if one did and its time was noted (not on a connection with no
    row), ``on_busy`` when another run holding the connection's lock (a sync) stopped it. Never raises for a
    type's failure; one that stops the run is reported on its type, and the types after it as not reached."""
    reports: list[ReconcileReport] = []
    for index, resource_type in enumerate(types):
        try:
            report = reconcile_deletes(env, connection_id, resource_type, run_id=run_id)
            stop = report.stopped
        except Exception as exc:  # the isolation boundary: this type's failure only, unless nothing gets past it
            code = getattr(exc, "code", type(exc).__name__)
            report = ReconcileReport(resource_type, error=f"{code}: {exc}")
            # info: the run's failure names every such type and why (``ehrsync reconcile``'s one error line)
            _log.info("reconciling %s of %s failed: %s", resource_type, connection_id, report.error)
            stop = run_stop(exc)
        reports.append(report)
        if on_report is not None:
            on_report(report)
        if stop is not None:
            throttle = note_connection_throttle(env.db, connection_id, stop.cause)
            if throttle is not None and on_hold is not None:
                on_hold(throttle)
            if isinstance(stop.cause, ConnectionBusyError) and on_busy is not None:
                on_busy()
            stopped = f"not reached: the run stopped at {resource_type} ({stop.code})"
            reports += [ReconcileReport(t, error=stopped) for t in types[index + 1 :]]
            break
    return reports
