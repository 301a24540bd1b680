"""Practitioner/Organization/Location/Medication a patient's resources point at, read by id (deduplicated).

They are not in the patient compartment, so search by ``patient`` cannot find them; reading exactly the
references found keeps the warehouse joinable without pulling a whole directory. Where the server declares
``search-type`` for the type and the granted scopes allow search, ids are asked for ``ID_BATCH`` at a time with
``_id=a,b,c`` (one request instead of one per id); any id the search did not return is then read on its own, so
a server that ignores the list, hides a match, refuses the search or answers it unreadably costs requests, never
data, and a missing target is still told apart (``not_found``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.budgets import step_budget
from connectors.errors import (
    EhrSyncError,
    FhirError,
    FhirGoneError,
    FhirNotFoundError,
    FhirUnauthorizedError,
    SearchIncompleteError,
)
from connectors.fhir import FhirClient
from connectors.fhir.capability import INTERACTIONS, declared_interactions
from connectors.fhir.resource_types import SYNCED_RESOURCE_TYPES, patient_search_param
from engine import cursors
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.reports import TypeReport
from engine.request_stops import EVERY_REQUEST_WOULD_MEET, LANDING_DISK_FULL
from warehouse import LandingWriter, LandingZone, Warehouse
from warehouse.errors import WarehouseError

# The synced types outside the patient compartment (connectors' one list): shared reference data, read by id.
REFERENCED_TYPES: tuple[str, ...] = tuple(t for t in SYNCED_RESOURCE_TYPES if patient_search_param(t) is None)
ID_BATCH = 50  # ids per `_id` search: ~2 KB of query string, under every server's URL limit
# A search refused with one of these falls back to reads for the rest of the type (the server cannot do it).
_SEARCH_UNSUPPORTED = frozenset({400, 403, 404, 405, 422, 501})

_REF = re.compile(
    r"^(?:(?P<base>.+)/)?(?P<type>"
    + "|".join(REFERENCED_TYPES)
    + r")/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)
_log = logging.getLogger(__name__)


def collect_references(resource: Any, fhir_base: str, into: set[str]) -> None:
    """Add ``Type/id`` of every same-server reference to a referenced type found anywhere in ``resource``.

    Absolute references to another server are ignored: their ids mean nothing here and the token must not
    travel there; contained (``#x``) and ``urn:uuid`` references are ignored too.
    """
    base = fhir_base.rstrip("/")
    stack = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                match = _REF.match(ref)
                if match and (match.group("base") is None or match.group("base").rstrip("/") == base):
                    into.add(f"{match.group('type')}/{match.group('id')}")
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))


def fetch_references(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: FhirClient,
    wh: Warehouse,
    run_id: str,
    references: Iterable[str],
) -> dict[str, TypeReport]:
    """Read each reference once, land per type, upsert; a missing target is counted (``not_found``), not fatal.

    References of a type that completed leave the queue; a type that failed keeps its references queued.
    """
    by_type: dict[str, list[str]] = {}
    for ref in sorted(set(references)):
        rtype, _, rid = ref.partition("/")
        by_type.setdefault(rtype, []).append(rid)
    with step_budget("reading referenced resources", env.step_budget_s):
        return _fetch_all(env, conn, client, wh, run_id, by_type)


def _fetch_all(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: FhirClient,
    wh: Warehouse,
    run_id: str,
    by_type: dict[str, list[str]],
) -> dict[str, TypeReport]:
    reports: dict[str, TypeReport] = {}
    for rtype, ids in by_type.items():
        try:
            batched = can_search_by_id(
                conn, rtype, env.capabilities(conn, client, run_id, reads=INTERACTIONS.of(rtype))
            )
            reports[rtype] = land_by_ids(env.zone, conn, client, wh, run_id, rtype, ids, batched=batched)
        except (*EVERY_REQUEST_WOULD_MEET, *LANDING_DISK_FULL):
            # every further request would fail (or wait the refresh lock's 300 s), every landing meet the full disk,
            # the same way: the run stops (a batch too, ``engine.batch_stop``); this type's references stay queued
            raise
        except (EhrSyncError, WarehouseError, OSError) as exc:
            _log.warning("reading referenced %s of %s failed: %s", rtype, conn.id, exc)
            reports[rtype] = TypeReport(rtype, error=f"{getattr(exc, 'code', type(exc).__name__)}: {exc}")
            continue
        cursors.dequeue_references(env.db, conn.id, {f"{rtype}/{i}" for i in ids})
    return reports


def land_by_ids(
    zone: LandingZone,
    conn: ConnectionInfo,
    client: FhirClient,
    wh: Warehouse,
    run_id: str,
    rtype: str,
    ids: list[str],
    *,
    batched: bool = False,
    seq: str = "refs",
    observed_at: datetime | None = None,
) -> TypeReport:
    """Read ``ids`` of ``rtype`` (``_id`` searches first where ``batched``, then one read per id still missing),
    land them as one file and upsert it; a missing id is counted (``not_found``). ``observed_at``: a server time
    no later than the reads (the rows' ``transaction_time``, which lets a copy without ``lastUpdated`` lift an
    older tombstone); None where none is known."""
    scopes = conn.scopes
    if scopes is not None and not scopes.allows(rtype, "read"):
        return TypeReport(rtype, skipped_reason="scope_not_granted")

    def fill(writer: LandingWriter, report: TypeReport) -> None:
        answers = IdSearch()
        if batched:
            every = conn.provider.every_search_params(conn.provider_config)  # athenahealth: ah-practice
            search_by_ids(client, rtype, ids, writer, report, every_search=every, answers=answers)
        for rid in ids:
            if rid in answers.found:
                continue
            try:
                resource = client.read(rtype, rid)
            except (FhirNotFoundError, FhirGoneError):
                report.not_found += 1
                _log.info("referenced %s/%s not found on %s", rtype, rid, conn.id)
                continue
            report.fetched += 1
            writer.add_resource(resource)

    return land_with(zone, conn, wh, run_id, rtype, fill, seq=seq, observed_at=observed_at)


def land_with(
    zone: LandingZone,
    conn: ConnectionInfo,
    wh: Warehouse,
    run_id: str,
    rtype: str,
    fill: Callable[[LandingWriter, TypeReport], None],
    *,
    seq: str,
    observed_at: datetime | None,
) -> TypeReport:
    """Land what ``fill`` adds to the writer (it counts into the report) as one file of ``rtype`` read by id, and
    upsert it: the report gets the landing's and the warehouse's counts. An exception out of ``fill`` lands
    nothing."""
    started = time.monotonic()
    report = TypeReport(rtype)
    source = f"{conn.fhir_base.rstrip('/')}/{rtype}"
    with zone.writer(conn.id, rtype, run_id, source, conn.tenant_id, observed_at, seq=seq) as writer:
        fill(writer, report)
    landed = writer.result
    report.quarantined = landed.quarantined
    report.bytes = landed.bytes
    report.files = 1
    stats = wh.upsert(landed)
    report.created, report.updated, report.unchanged = stats.inserted, stats.updated, stats.unchanged
    report.duration_s = time.monotonic() - started
    return report


def can_search_by_id(conn: ConnectionInfo, rtype: str, capabilities: dict[str, Any] | None) -> bool:
    """Search only where both sides say so: the server declares ``search-type`` and the grant allows search
    (SMART v2 separates ``r`` from ``s``), and the vendor takes an ``_id`` search of the type (no parameters it
    requires are missing). Without a CapabilityStatement, read one by one as before."""
    if capabilities is None or "search-type" not in declared_interactions(capabilities, rtype):
        return False
    if not _id_search_meets_vendor_rules(conn, rtype):
        return False
    return conn.scopes is None or conn.scopes.allows(rtype, "search")


def _id_search_meets_vendor_rules(conn: ConnectionInfo, rtype: str) -> bool:
    """An ``_id`` search (with the vendor's ``every_search_params``) satisfies one of the parameter sets the vendor
    requires for the type (``ProviderPlugin.required_search_params``; none: any search will do). A search that
    does not may answer with no match at all (Epic's Observation without category or code), which would read as
    every id asked for being gone."""
    required = conn.provider.required_search_params.get(rtype)
    if not required:
        return True
    sent = {"_id", *conn.provider.every_search_params(conn.provider_config)}
    return any(set(names) <= sent for names in required)


@dataclass
class IdSearch:
    """What ``_id`` searches answered: the ids they returned (``found``), and the ids whose search answered in full
    (``settled``): it ended on its own (no refusal, no foreign id, no early stop) in one page, or in pages that gave
    a ``total`` the client checked. An id settled but not found is not on the server; one a search paged without
    a total left out may have been skipped (an offset server with a match deleted meanwhile)."""

    found: set[str] = field(default_factory=set)
    settled: set[str] = field(default_factory=set)


def search_by_ids(
    client: FhirClient,
    rtype: str,
    ids: list[str],
    writer: LandingWriter,
    report: TypeReport,
    *,
    every_search: Mapping[str, str],
    answers: IdSearch,
) -> None:
    """Land what ``_id`` searches return for ``ids``, recording into ``answers`` as they come (an exception keeps
    what earlier chunks answered). Each search also carries the vendor's ``every_search`` parameters
    (``ProviderPlugin.every_search_params``: athenahealth's ``ah-practice``).

    Batching stops for the type when the server refuses the search, answers with a page that is no readable
    searchset (a FhirError of a 200: ``entry`` a bare object, BDX-29), or answers with resources that were not
    asked for (it ignored ``_id`` and would page through its whole directory); a chunk stops paging at the
    first page with a next link that brings no new id (its ids stay unsettled). A chunk's ids are settled only by
    a search that ended on its own and passed the paging checks (no error OperationOutcome, not short of a total).
    The reads that follow fetch whatever is still missing.
    """
    for start in range(0, len(ids), ID_BATCH):
        chunk = ids[start : start + ID_BATCH]
        wanted = set(chunk)
        pages, counted, ended = 0, False, False
        try:
            params = [("_id", ",".join(chunk)), *every_search.items()]
            for page in client.search_pages(rtype, params, count=len(chunk)):
                report.pages += 1
                pages, counted, ended = pages + 1, counted or page.total is not None, page.next_url is None
                matches = [r for r in page.resources if r.get("resourceType") == rtype]
                # an id that is no string (a JSON array: unhashable) is no id asked for either
                if any(not isinstance(r.get("id"), str) or r["id"] not in wanted for r in matches):
                    _log.info("%s search by _id returned ids not asked for; reading one by one instead", rtype)
                    return
                added = 0
                for resource in matches:
                    if resource["id"] not in answers.found:
                        answers.found.add(resource["id"])
                        report.fetched += 1
                        writer.add_resource(resource)
                        added += 1
                if not added and page.next_url is not None:
                    break  # a page of repeats: stop paging (the chunk stays unsettled, its reads follow)
                # with no next link the search is left to end on its own, so its checks run (an error
                # OperationOutcome, fewer matches than its total): only a search that passed them settles its ids
        except SearchIncompleteError:
            _log.info("%s search by _id stopped early; reading the missing ones one by one", rtype)
            continue
        except FhirError as exc:
            if isinstance(exc, FhirUnauthorizedError) or exc.status not in _SEARCH_UNSUPPORTED | {200}:
                raise
            # 200: an answer that is no readable searchset (not a Bundle, ``entry`` a bare object): no evidence
            _log.info(
                "%s search by _id refused or unreadable (HTTP %s); reading the rest one by one", rtype, exc.status
            )
            break
        if ended and (pages == 1 or counted):
            answers.settled |= wanted
