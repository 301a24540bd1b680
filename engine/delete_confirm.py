"""Confirming deletions before the BDX-31 reconciliation tombstones them.

An id listing can skip a match without saying so (offset paging with no ``total``, a match deleted or inserted
while it pages), and a skipped id reads exactly like a deleted one. So every id the listing lacks is asked for
again before its row is tombstoned:

- where the server declares ``search-type`` and the grant allows search (``references.can_search_by_id``), by
  ``_id`` searches ``references.ID_BATCH`` ids at a time (a mass deletion costs a search per 50 ids): an id a
  search returns is alive; one absent from a search that answered in full (``references.IdSearch.settled``) is
  gone;
- every id still undecided is read by id, at most ``CONFIRM_MAX_READS`` a type a reconciliation: 404 or 410
  confirms the deletion, 200 shows it alive; any other answer (403, 5xx after retries, 401, an outage, the step
  budget) leaves it unconfirmed. A 403 or 5xx is about that resource: the next id is read (until
  ``FAILED_READS_IN_A_ROW`` 5xx in a row, the server failing); the others stop the asking.

A grant that allows search but not read (SMART v2 ``.s`` without ``.r``) where no ``_id`` search settles an id
(the server declares none, the vendor needs other parameters, or it answered without a total) leaves the ids
``unconfirmable``: nothing failed, nothing was read, and every week would end the same until the grant changes. That
is a standing condition, not a failure: the rows stay live and ``Confirmation.unconfirmable`` names the scope the
grant lacks, so the caller reports it once per run instead of failing it.

Copies found alive are landed and upserted like a read-back (so a newer version is stored). Only confirmed ids
are tombstoned: an unconfirmed one stays live until a later reconciliation settles it (never the other way round,
a live row hidden from analysts without anyone being told).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from connectors.budgets import step_budget
from connectors.errors import (
    EhrSyncError,
    FhirError,
    FhirForbiddenError,
    FhirGoneError,
    FhirNotFoundError,
    FhirUnauthorizedError,
    NeedsReauthError,
    RateLimitedError,
    TransportError,
)
from connectors.fhir import FhirClient
from connectors.fhir.capability import INTERACTIONS
from connectors.smart import ScopeSet
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.reconcile_stops import RunStop, run_stop
from engine.references import IdSearch, can_search_by_id, land_with, search_by_ids
from engine.reports import SCOPE_NOT_GRANTED, TypeReport
from warehouse import LandingWriter, Warehouse, WarehouseError

__all__ = ["CONFIRM_MAX_READS", "FAILED_READS_IN_A_ROW", "Confirmation", "confirm_deleted"]

_log = logging.getLogger(__name__)
#: Most ids one reconciliation reads one by one to confirm a type's deletions (those no ``_id`` search settled).
#: It bounds a mass deletion on a server without ``_id`` search (or one whose searches never answer in full) to
#: this many requests a week; the ids over it stay live, unconfirmed, and later reconciliations go on with them
#: (the confirmed ones leave the warehouse's live ids, so each week reaches further).
CONFIRM_MAX_READS = 1000
#: Reads by id that may fail with a 5xx one after another before the asking stops: a few is one bad resource or
#: two, more is the server failing (each read already spent the client's retries).
FAILED_READS_IN_A_ROW = 3


@dataclass(frozen=True)
class Confirmation:
    """What asking the server again for the ids a listing lacked found: ``gone`` (confirmed deleted: tombstone
    them), ``alive`` (the server still has them), ``unconfirmed`` (neither: over ``CONFIRM_MAX_READS``, refused or
    failed), ``landed`` (the copies found alive, landed and upserted; None when nothing was landed) and ``error``
    (the failure that left ids unconfirmed, None when only the cap did), ``unconfirmable`` (why the grant lets
    nothing confirm the ids left, naming the scope it lacks; never a failure)."""

    gone: list[str]
    alive: int = 0
    unconfirmed: int = 0
    landed: TypeReport | None = None
    error: str | None = None
    unconfirmable: str | None = None
    stopped: RunStop | None = None  # ``error`` when no later type gets past it (engine.reconcile_stops)


@dataclass
class _Asking:
    """The answers so far: kept whatever stops the asking, so an outage spends only what was not confirmed."""

    candidates: list[str]
    search: IdSearch = field(default_factory=IdSearch)  # what `_id` searches answered (reads add what they find)
    read_gone: set[str] = field(default_factory=set)  # answered 404/410
    over_cap: int = 0
    error: str | None = None
    unconfirmable: str | None = None  # the grant allows no read by id: why (see the module docstring)
    stopped: RunStop | None = None  # the error when no later type gets past it (engine.reconcile_stops)

    def failed(self, exc: BaseException) -> None:
        """Record what stopped the asking (the answers so far are kept)."""
        self.error = _describe(exc)
        self.stopped = run_stop(exc)

    def gone(self) -> set[str]:
        return self.read_gone | (self.search.settled - self.search.found)

    def undecided(self) -> list[str]:
        gone = self.gone()
        return [i for i in self.candidates if i not in self.search.found and i not in gone]


def confirm_deleted(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    wh: Warehouse,
    run_id: str,
    rtype: str,
    candidates: list[str],
    listed_at: datetime | None,
) -> Confirmation:
    """Ask the server for each of ``candidates`` (ids of ``rtype`` the listing lacked, sorted) under the step
    budget (within a reconcile, what is left of the type's); the copies found are observed at ``listed_at`` (the
    listing's server time), like a read-back."""
    asking = _Asking(candidates)
    landed = None
    try:
        with (
            step_budget(
                f"reconciling {rtype} (confirming the deletions its listing suggests)",
                env.step_budget_s,
                kept=f"only the {rtype} ids confirmed gone are tombstoned, the rest stay live until the next reconcile",
            ),
            env.fhir_client(conn) as client,
        ):
            by_id = can_search_by_id(conn, rtype, env.capabilities(conn, client, run_id, reads=INTERACTIONS.of(rtype)))

            def fill(writer: LandingWriter, report: TypeReport) -> None:
                _ask(client, conn, rtype, asking, writer, report, batched=by_id)

            landed = land_with(env.zone, conn, wh, run_id, rtype, fill, seq="reconcile-confirm", observed_at=listed_at)
    except (EhrSyncError, WarehouseError, OSError) as exc:  # the token, the capabilities, or the upsert
        asking.failed(exc)
    undecided = len(asking.undecided())
    if asking.error is not None:
        _log.warning(
            "%s/%s: %d ids the listing lacked stay live, their deletion unconfirmed: %s",
            conn.id,
            rtype,
            undecided,
            asking.error,
        )
    elif asking.unconfirmable is not None:
        _log.warning(
            "%s/%s: %d ids the listing lacked stay live, their deletion unconfirmable: %s",
            conn.id,
            rtype,
            undecided,
            asking.unconfirmable,
        )
    elif asking.over_cap:
        _log.warning(
            "%s/%s: %d ids the listing lacked stay live, unconfirmed: over %d reads a reconciliation",
            conn.id,
            rtype,
            asking.over_cap,
            CONFIRM_MAX_READS,
        )
    found = landed if landed is not None and landed.fetched else None
    unconfirmable = asking.unconfirmable if asking.error is None else None
    gone = sorted(asking.gone())
    return Confirmation(gone, len(asking.search.found), undecided, found, asking.error, unconfirmable, asking.stopped)


def _ask(
    client: FhirClient,
    conn: ConnectionInfo,
    rtype: str,
    asking: _Asking,
    writer: LandingWriter,
    report: TypeReport,
    *,
    batched: bool,
) -> None:
    """``_id`` searches where ``batched``, then reads of what they left undecided; a failure stops the asking
    (recorded, not raised: what was answered is landed and kept), but a refused token is raised (the answers so
    far are kept in ``asking``, the copies found not landed: their rows stay live all the same)."""
    try:
        if batched:
            every = conn.provider.every_search_params(conn.provider_config)  # athenahealth: ah-practice
            search_by_ids(client, rtype, asking.candidates, writer, report, every_search=every, answers=asking.search)
        if conn.scopes is not None and not conn.scopes.allows(rtype, "read"):
            if asking.undecided():
                asking.unconfirmable = _unreadable(conn.scopes, rtype, batched=batched)
            return
        _read_each(client, rtype, asking, writer, report)
    except (FhirUnauthorizedError, NeedsReauthError):
        raise  # out of the client's block, which has the vault confirm the refusal; the caller records it
    except EhrSyncError as exc:  # an outage, the step budget: the rest stay unconfirmed, what was answered lands
        asking.failed(exc)


def _read_each(client: FhirClient, rtype: str, asking: _Asking, writer: LandingWriter, report: TypeReport) -> None:
    """Read each undecided id, up to ``CONFIRM_MAX_READS``: 404/410 is gone, 200 alive (landed); 403, or a 5xx
    after the client's retries, leaves that one unconfirmed and the next is asked for (one resource the server
    cannot serve must not hold back the ids after it every week), until ``FAILED_READS_IN_A_ROW`` fail one after
    another (the server, not one resource); any other failure raises (the asking stops)."""
    undecided = asking.undecided()
    asking.over_cap = max(0, len(undecided) - CONFIRM_MAX_READS)
    failed_in_a_row = 0
    for rid in undecided[:CONFIRM_MAX_READS]:
        try:
            resource = client.read(rtype, rid)
        except (FhirNotFoundError, FhirGoneError):
            asking.read_gone.add(rid)
            failed_in_a_row = 0
            continue
        except FhirForbiddenError as exc:  # this resource, not the server: the others are still asked for
            asking.error = asking.error or _describe(exc)
            continue
        except FhirError as exc:
            failed_in_a_row += 1
            if not _resource_failure(exc) or failed_in_a_row >= FAILED_READS_IN_A_ROW:
                raise
            asking.error = asking.error or _describe(exc)
            continue
        failed_in_a_row = 0
        if resource.get("resourceType") == rtype and resource.get("id") == rid:
            asking.search.found.add(rid)
            report.fetched += 1
            writer.add_resource(resource)
        else:  # an answer about something else confirms nothing
            asking.error = asking.error or f"reading {rtype} by id answered a different resource"


def _unreadable(scopes: ScopeSet, rtype: str, *, batched: bool) -> str:
    """Why the ids left are unconfirmable: the read scope the grant lacks (in the spelling of the scope that lets
    it search the type), and why no ``_id`` search settled them."""
    context = next((s.context for s in scopes.resource_scopes if s.covers(rtype, "s")), "patient")
    searches = "its _id searches did not settle them" if batched else "the EHR takes no _id search of it"
    return (
        f"{SCOPE_NOT_GRANTED}: the grant allows searching {rtype} but not reading it by id ({context}/{rtype}.r "
        f"not granted) and {searches}; grant {context}/{rtype}.r (the patient authorizes again) to confirm them"
    )


def _resource_failure(exc: FhirError) -> bool:
    """A 5xx answer about one resource (the client already retried it); not a throttle, which holds for all."""
    return exc.status >= 500 and not isinstance(exc, RateLimitedError)


def _describe(exc: BaseException) -> str:
    """The failure's code, and its HTTP status or message, without a URL: a read's URL names the resource."""
    code = getattr(exc, "code", type(exc).__name__)
    if isinstance(exc, FhirError):
        return f"{code} (HTTP {exc.status})"
    return code if isinstance(exc, TransportError) else f"{code}: {exc}"
