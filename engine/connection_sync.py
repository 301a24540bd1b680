"""``sync_connection``: every resource type of one patient connection, then the resources they reference.

One type failing (a 403, a server error after retries, a warehouse error) is reported and the others go on;
only NeedsReauthError and EhrUnreachableError (connection refused, DNS failure) stop the connection, because
every further request would fail the same way.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable

from connectors.errors import EhrSyncError, EhrUnreachableError, FhirError, NeedsReauthError
from connectors.fhir import SYNCED_RESOURCE_TYPES, patient_search_param
from engine import cursors, runs
from engine.connection_lock import hold_connection
from engine.environment import SyncEnvironment, load_connection
from engine.incremental import land_resource_type, upsert_resource_type
from engine.models import utcnow
from engine.references import fetch_references
from engine.reports import SyncReport, TypeReport
from store.models import Connection
from warehouse import Warehouse
from warehouse.errors import WarehouseError

# Searched in the patient compartment (connectors' one list of synced types), Patient first.
PATIENT_TYPES: tuple[str, ...] = tuple(t for t in SYNCED_RESOURCE_TYPES if patient_search_param(t) is not None)

Progress = Callable[[str, TypeReport], None]
_log = logging.getLogger(__name__)
# What a single type may fail with without stopping the others (NeedsReauthError is handled before these).
_TYPE_ERRORS = (EhrSyncError, WarehouseError, OSError)


def _describe(exc: BaseException, *, for_log: bool = False) -> str:
    """``code: message``; ``for_log`` leaves out the server's diagnostics (they may echo patient data)."""
    code = getattr(exc, "code", None)
    text = exc.safe_message if for_log and isinstance(exc, FhirError) else str(exc)
    return f"{code}: {text}" if code else f"{type(exc).__name__}: {text}"


def sync_connection(
    env: SyncEnvironment,
    connection_id: str,
    *,
    resource_types: Iterable[str] | None = None,
    full: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    """Land and upsert each type (then referenced resources), recording the run in ``sync_runs``.

    Returns the report in every case except a connection that cannot sync at all (ConnectionNotFoundError,
    ConnectionNotSyncableError) or that another sync holds (ConnectionBusyError, after a bounded wait);
    ``report.needs_reauth`` says the grant is gone (the vault marked the connection).
    """
    started = time.monotonic()
    conn = load_connection(env.db, connection_id)
    kind = "full" if full else "incremental"
    run_id = uuid.uuid4().hex
    with hold_connection(env, connection_id, run_id):
        runs.create_run(env.db, connection_id, kind, tenant_id=conn.tenant_id, run_id=run_id)
        runs.mark_running(env.db, run_id)
        report = SyncReport(run_id=run_id, connection_id=connection_id, kind=kind)
        _sync_types(env, report, resource_types, full, progress)
        report.duration_s = time.monotonic() - started
        _finish(env, report)
    return report


def _sync_types(
    env: SyncEnvironment,
    report: SyncReport,
    resource_types: Iterable[str] | None,
    full: bool,
    progress: Progress | None,
) -> None:
    connection_id, run_id = report.connection_id, report.run_id
    try:
        for rtype in resource_types or PATIENT_TYPES:
            type_report = _sync_type(env, connection_id, rtype, run_id, full)
            report.types[rtype] = type_report
            if progress is not None:
                progress(rtype, type_report)
        report.types.update(sync_references(env, connection_id, run_id))
    except NeedsReauthError as exc:
        report.needs_reauth = True
        report.error = _describe(exc)
        _log.warning("sync of %s stopped: the grant needs re-authorization", connection_id)
    except EhrUnreachableError as exc:
        report.error = _describe(exc)
        _log.error("sync of %s stopped: %s", connection_id, exc)


def _sync_type(env: SyncEnvironment, connection_id: str, rtype: str, run_id: str, full: bool) -> TypeReport:
    try:
        land_resource_type(env, connection_id, rtype, run_id, full=full)
        return upsert_resource_type(env, connection_id, rtype, run_id)
    except (NeedsReauthError, EhrUnreachableError):
        raise
    except _TYPE_ERRORS as exc:
        _log.warning("sync of %s/%s failed: %s", connection_id, rtype, _describe(exc, for_log=True))
        return TypeReport(rtype, error=_describe(exc))


def sync_references(env: SyncEnvironment, connection_id: str, run_id: str) -> dict[str, TypeReport]:
    """Read the Practitioner/Organization/Location/Medication references queued by upserted types.

    Per-type failures come back in the reports (those references stay queued); NeedsReauthError propagates.
    """
    with hold_connection(env, connection_id, run_id):
        return _sync_references(env, connection_id, run_id)


def _sync_references(env: SyncEnvironment, connection_id: str, run_id: str) -> dict[str, TypeReport]:
    queued = cursors.queued_references(env.db, connection_id)
    if not queued:
        return {}
    conn = load_connection(env.db, connection_id)
    run = runs.get(env.db, run_id)
    refresh_known = run is not None and run.kind == "full"
    with env.warehouse() as wh:
        wanted = queued if refresh_known else _not_yet_stored(wh, connection_id, queued)
        cursors.dequeue_references(env.db, connection_id, set(queued) - set(wanted))
        if not wanted:
            return {}
        with env.fhir_client(conn) as client:
            return fetch_references(env, conn, client, wh, run_id, wanted)


def _not_yet_stored(wh: Warehouse, connection_id: str, references: list[str]) -> list[str]:
    """References whose target the warehouse does not hold yet: an incremental run costs what changed.

    Shared resources (Practitioner, Organization, ...) already stored are re-read by the next full sync.
    """
    by_type: dict[str, set[str]] = {}
    for ref in references:
        rtype, _, rid = ref.partition("/")
        by_type.setdefault(rtype, set()).add(rid)
    stored = {rtype: wh.live_ids(connection_id, rtype) for rtype in by_type}
    return [ref for ref in references if ref.partition("/")[2] not in stored[ref.partition("/")[0]]]


def _finish(env: SyncEnvironment, report: SyncReport) -> None:
    counts = report.counts()
    failed = report.failed_types
    attempted = [t for t, r in report.types.items() if r.skipped_reason is None]
    if report.needs_reauth or report.error is not None:
        report.status = "failed"  # stopped early: the grant is gone, or the EHR cannot be reached
        runs.fail(env.db, report.run_id, report.error or "needs_reauth", counts)
        return
    lost = {t: r.error for t, r in report.types.items() if r.incomplete and r.error is not None}
    if lost:  # a search that stopped early: what arrived is stored, but the run did not receive everything
        report.status = "failed"
        report.error = "; ".join(f"{t}: {e}" for t, e in failed.items())
        runs.fail(env.db, report.run_id, report.error, counts)
        return
    if attempted and len(failed) == len(attempted):
        report.status = "failed"
        report.error = "every resource type failed: " + "; ".join(f"{t}: {e}" for t, e in failed.items())
        runs.fail(env.db, report.run_id, report.error, counts)
        return
    report.status = "completed"
    problems = {**{t: "search_incomplete: mark held back" for t, r in report.types.items() if r.incomplete}, **failed}
    summary = "; ".join(f"{t}: {e}" for t, e in problems.items()) or None
    report.error = summary
    runs.complete(env.db, report.run_id, counts, error=summary)
    with env.db.locked_session() as session:  # read-modify-write: hold the write lock from the read
        row = session.get(Connection, report.connection_id)
        if row is not None:
            row.last_sync_at = utcnow()
            session.commit()
