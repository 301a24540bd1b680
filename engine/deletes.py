"""Deletion reconciliation (BDX-31): search never reports deletes, so compare the server's ids with ours.

An id the server's listing lacks is only a candidate: an offset-paged server that gives no ``total`` and has a
match deleted or inserted while the listing pages skips a match that still exists, which reads exactly like a
deletion. Each candidate is asked for again (``engine.delete_confirm``: ``_id`` searches in batches where the
server has them, else reads by id, at most ``CONFIRM_MAX_READS`` a type a reconciliation) and only those confirmed
gone are tombstoned; one found alive is landed instead, and one left unconfirmed (over the cap, a failure, or a
grant that allows no read by id: ``unconfirmable``) stays live and is counted in the report until a later
reconciliation settles it.

The same id listing also shows what a search skipped without saying so: an offset-paged server that gives no
``total`` and has a match deleted while the sync pages skips the match behind it, and the type's mark moves past
it for good (nothing later searches older than the mark). Ids the server lists that the warehouse lacks are read
back by id here, so such a loss lasts until the connection's next weekly reconciliation, not forever.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from connectors.budgets import step_budget
from connectors.errors import EhrSyncError
from connectors.fhir.capability import INTERACTIONS
from engine import cursors
from engine.connection_info import ConnectionInfo, load_connection
from engine.connection_lock import hold_connection
from engine.delete_confirm import Confirmation, confirm_deleted
from engine.environment import SyncEnvironment
from engine.models import utcnow
from engine.reconcile_stops import RunStop, run_stop
from engine.references import can_search_by_id, land_by_ids
from engine.reports import SCOPE_NOT_GRANTED, TypeReport
from engine.search_plans import grant_narrows, search_plans
from warehouse import Warehouse, WarehouseError

__all__ = ["RECOVER_MAX_IDS", "ReconcileReport", "reconcile_deletes"]

_log = logging.getLogger(__name__)
ID_PAGE_SIZE = 1000
#: Most unlisted ids read back one reconciliation: past it, the type's mark is cleared instead, so its next sync
#: searches the whole type (a paged search, not thousands of reads).
RECOVER_MAX_IDS = 1000


@dataclass(frozen=True)
class ReconcileReport:
    """One type's reconciliation: rows tombstoned (the server no longer lists them, and asked for again, confirmed
    them gone), ids the listing lacked that the server still has (``alive``: not tombstoned; ``checked`` is what
    landing their copies did, None when none was landed) and whose deletion could not be confirmed
    (``unconfirmed``: over ``CONFIRM_MAX_READS``, or a failure named in ``confirm_error``; not tombstoned this
    time), why none of them could be confirmed when the grant allows no read by id and no ``_id`` search settled
    them (``unconfirmable``: the scope it lacks; a standing condition, not a failure: ``confirm_error`` stays None),
    ids the server lists that the warehouse lacked (``unlisted``), and what reading them back did
    (``recovered``; None when none were read; its ``error`` set when reading them back failed, the tombstones
    kept: the caller reports the type as failed)."""

    resource_type: str
    tombstoned: int = 0
    unlisted: int = 0
    recovered: TypeReport | None = None
    mark_cleared: bool = False
    alive: int = 0
    unconfirmed: int = 0
    checked: TypeReport | None = None
    confirm_error: str | None = None
    unconfirmable: str | None = None
    #: Why the type was not reconciled on purpose (``scope_not_granted``: the grant covers none or only part of it,
    #: so a listing would read the rest as deletions); not a failure, yet not reconciled either: a run asked for again
    #: after the grant widened lists it (``pipelines/defs/maintenance/reconcile_resume.py``). None when not skipped
    skipped_reason: str | None = None
    #: Why the type was not reconciled this run (its listing failed, or an earlier type stopped the run): nothing
    #: of it tombstoned or read back; None when it was (``engine.reconcile_run``)
    error: str | None = None
    #: A failure no later type gets past (``engine.reconcile_stops``) met while confirming or reading back, after
    #: the listing: what was confirmed gone is tombstoned and counted here, and the run stops after this type; None
    #: when none was met
    stopped: RunStop | None = None


def reconcile_deletes(
    env: SyncEnvironment, connection_id: str, resource_type: str, *, run_id: str | None = None
) -> ReconcileReport:
    """Tombstone warehouse rows of the type whose ids the server no longer lists and, asked for again, confirms
    gone, and read back the ids it lists that the warehouse lacks (or clear the type's mark when they are over
    ``RECOVER_MAX_IDS``).

    The whole id listing (``_elements=id``, every page, every vendor search plan) must succeed before anything
    is tombstoned or read: a partial listing raises and changes nothing, so an outage never reads as mass deletion
    (nor does a listing that outlives the step budget: ``StepBudgetExceededError``).
    The type's listing, confirmation and read-back spend one step budget together (``EHRSYNC_STEP_BUDGET_S``), as
    a type's landing does, so a server can hold one type's reconcile (and the lock) no longer than that.
    An outage while confirming tombstones only what was confirmed before it (``confirm_error`` says why the rest
    were not).
    Holds the connection's lock (``hold_connection``) throughout, so a reconcile never runs beside a sync of the
    same connection (a sync landing new ids mid-listing would read as deletions): another holder makes it wait
    ``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS``, then raise ``ConnectionBusyError``. ``run_id`` names this call in
    the lock file and the landing file of what is read back (default ``reconcile-<random>``).
    """
    conn = load_connection(env.db, connection_id)
    run_id = run_id or f"reconcile-{uuid.uuid4().hex}"
    with (
        hold_connection(env, connection_id, run_id),
        step_budget(f"reconciling {resource_type}", env.step_budget_s, kept=retried(resource_type)),
    ):
        return _reconcile(env, conn, resource_type, run_id)


def retried(resource_type: str) -> str:
    """What a reconcile of the type cut short before tombstoning leaves (the end of its budget's error message;
    a reconcile has no mark to keep)."""
    return f"nothing of {resource_type} was tombstoned, the next reconcile retries it"


def _reconcile(env: SyncEnvironment, conn: ConnectionInfo, resource_type: str, run_id: str) -> ReconcileReport:
    connection_id = conn.id
    scopes = conn.scopes
    if scopes is not None and not (scopes.allows(resource_type, "search") or scopes.allows(resource_type, "read")):
        _log.info("not reconciling %s for %s: %s", resource_type, connection_id, SCOPE_NOT_GRANTED)
        return ReconcileReport(resource_type, skipped_reason=SCOPE_NOT_GRANTED)
    if grant_narrows(conn, resource_type):  # the listing would miss the categories not granted: no deletions
        _log.info("not reconciling %s for %s: the grant covers only part of the type", resource_type, connection_id)
        return ReconcileReport(resource_type, skipped_reason=SCOPE_NOT_GRANTED)
    server_ids, observed_at = _list_ids(env, conn, resource_type)
    with env.warehouse() as wh:
        live = wh.live_ids(connection_id, resource_type)
        unlisted = sorted(server_ids - live)
        report = ReconcileReport(resource_type, unlisted=len(unlisted))
        if missing := sorted(live - server_ids):  # candidates: a listing can skip a live match without saying so
            report = _tombstone_confirmed(env, conn, wh, run_id, report, missing, observed_at)
    if unlisted and report.stopped is None:  # the tombstones are committed: reading back is a step of its own
        with env.warehouse() as wh:
            report = _recover(env, conn, wh, run_id, report, unlisted, observed_at)
    _log.info(
        "reconciled %s/%s: %d tombstoned, %d still on the server, %d unconfirmed, %d listed but not stored",
        connection_id,
        resource_type,
        report.tombstoned,
        report.alive,
        report.unconfirmed,
        len(unlisted),
    )
    return report


def _tombstone_confirmed(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    wh: Warehouse,
    run_id: str,
    report: ReconcileReport,
    missing: list[str],
    listed_at: datetime | None,
) -> ReconcileReport:
    """Tombstone the ``missing`` ids the server confirms gone (``delete_confirm.confirm_deleted``), dated by the
    listing (the server's time when it did not list them: a copy answered later still revives the row,
    ``warehouse/_sql.newer_predicate``)."""
    rtype = report.resource_type
    confirmed: Confirmation = confirm_deleted(env, conn, wh, run_id, rtype, missing, listed_at)
    gone = confirmed.gone
    count = wh.tombstone(conn.id, rtype, gone, listed_at or utcnow()) if gone else 0
    return replace(
        report,
        tombstoned=count,
        alive=confirmed.alive,
        unconfirmed=confirmed.unconfirmed,
        checked=confirmed.landed,
        confirm_error=confirmed.error,
        unconfirmable=confirmed.unconfirmable,
        stopped=confirmed.stopped,
    )


def _list_ids(env: SyncEnvironment, conn: ConnectionInfo, resource_type: str) -> tuple[set[str], datetime | None]:
    """Every id the server lists for the type (every page of every vendor search plan) and the listing's time.

    Under the type's step budget (``EHRSYNC_STEP_BUDGET_S``), like a type's landing: a server that pages on without end
    or trickles its pages would otherwise hold the connection's lock for as long as it answers. Running out raises
    ``StepBudgetExceededError`` before anything is tombstoned or read back: a partial listing changes nothing."""
    server_ids: set[str] = set()
    observed_at = None
    with (
        step_budget(f"reconciling {resource_type} (listing its ids)", env.step_budget_s, kept=retried(resource_type)),
        env.fhir_client(conn) as client,
    ):
        for plan in search_plans(conn, resource_type, None, ID_PAGE_SIZE):
            plan["_elements"] = "id"
            for page in client.search_pages(resource_type, plan):
                observed_at = observed_at or page.bundle_meta_last_updated or page.server_date
                server_ids.update(
                    r["id"]
                    for r in page.resources
                    if r.get("resourceType") == resource_type and isinstance(r.get("id"), str)
                )
    return server_ids, observed_at


def _recover(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    wh: Warehouse,
    run_id: str,
    report: ReconcileReport,
    ids: list[str],
    listed_at: datetime | None,
) -> ReconcileReport:
    """Read back the ids the server lists that the warehouse lacks (a search skipped them, or they are newer than
    the last sync); too many, or a grant that allows search but not read, and the type's next sync searches it
    whole instead (its mark is cleared). The rows are observed when the server listed them (``listed_at``, its
    clock), so one the warehouse holds as deleted since before that is live again
    (``warehouse/_sql.newer_predicate``)."""
    rtype = report.resource_type
    unreadable = conn.scopes is not None and not conn.scopes.allows(rtype, "read")  # SMART v2: `.s` without `.r`
    if len(ids) > RECOVER_MAX_IDS or unreadable:
        cursors.clear_mark(env.db, conn.id, cursors.REST_STREAM, rtype)
        _log.warning(
            "%s/%s: the server lists %d ids the warehouse lacks (%s); the type's next sync searches it whole",
            conn.id,
            rtype,
            len(ids),
            "the grant allows search, not read" if unreadable else f"over {RECOVER_MAX_IDS} to read back",
        )
        return replace(report, mark_cleared=True)
    try:
        with (
            step_budget(
                f"reconciling {rtype} (reading back the ids the searches missed)",
                env.step_budget_s,
                kept=f"the {rtype} tombstones are kept, the next reconcile reads back the ids again",
            ),
            env.fhir_client(conn) as client,
        ):
            by_id = can_search_by_id(conn, rtype, env.capabilities(conn, client, run_id, reads=INTERACTIONS.of(rtype)))
            landed = land_by_ids(
                env.zone, conn, client, wh, run_id, rtype, ids, batched=by_id, seq="reconcile", observed_at=listed_at
            )
    except (EhrSyncError, WarehouseError, OSError) as exc:
        # The tombstones are committed (and counted: not raised, even when no later type gets past this failure,
        # ``stopped``); the other types are still reconciled unless it stops the run, and the job fails at the end
        # naming this one. Raising here would stop them every week for as long as this one id cannot be read.
        _log.warning("reading back %d unlisted %s of %s failed: %s", len(ids), rtype, conn.id, exc)
        landed = TypeReport(rtype, error=f"{getattr(exc, 'code', type(exc).__name__)}: {exc}")
        return replace(report, recovered=landed, stopped=run_stop(exc))
    return replace(report, recovered=landed)
