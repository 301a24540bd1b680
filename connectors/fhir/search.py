"""FHIR search paging (BDX-26..33): follow ``link[next]`` verbatim, one page in memory, server-clock marks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson

from connectors.errors import (
    FhirError,
    FhirGoneError,
    FhirNotFoundError,
    SearchIncompleteError,
    SearchLinkExpiredError,
)
from connectors.fhir._distinct import DistinctMatches
from connectors.fhir._exact_json import loads_exact
from connectors.fhir._session import FhirSession, QueryParams, TokenRule
from connectors.fhir.outcomes import describe_outcome, is_severe
from connectors.http import parse_http_date, parse_instant, redact_url, resolve_checked_url, resolve_url, url_problem
from connectors.transport.bounds import BodyBounds, read_capped

__all__ = ["MAX_EMPTY_PAGES", "SearchPage", "iter_search_pages", "parse_search_bundle"]

logger = logging.getLogger(__name__)

#: Consecutive pages with no match but a ``next`` link that are still followed: a server filtering its pages after
#: paging them (Epic's post-filtered parameters, access rules, deleted rows) sends a run of them while it pages past
#: rows its filter drops, dozens for a long record. One more ends the search (``empty_pages``): a cursor that changes
#: on every empty page repeats no link. Generous on purpose: the step budget (``EHRSYNC_STEP_BUDGET_S``) bounds time.
MAX_EMPTY_PAGES = 100

_FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class SearchPage:
    """One searchset Bundle page.

    ``resources`` are the matches only; ``included`` holds ``search.mode=include`` entries and ``outcomes``
    any OperationOutcome entries (an error/fatal one makes the search incomplete; the others are notices).
    ``bundle_meta_last_updated`` and ``server_date`` come from the server's clock: the caller takes its
    high-water mark from the first page (BDX-27). ``total`` never decides when paging stops (BDX-29); it only
    shows a search that ended short of it.
    """

    url: str
    resources: list[dict[str, Any]]
    bundle_meta_last_updated: datetime | None
    server_date: datetime | None
    included: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    next_url: str | None = None
    total: int | None = None
    #: ``link[self]`` as given: FHIR servers name there the parameters they applied (absent: the server said nothing)
    self_url: str | None = None

    @property
    def high_water_mark(self) -> datetime | None:
        """``Bundle.meta.lastUpdated``, else the ``Date`` header: never the client clock (BDX-27)."""
        return self.bundle_meta_last_updated or self.server_date


def _link(links: dict[str, str], relation: str, url: str) -> str | None:
    """The absolute URL of ``link[relation]``; one urllib cannot split (a bad port, an unclosed ``[``) or without a
    host is a FhirError naming it, so the sync fails with a message, not a ValueError, before it follows it."""
    if relation not in links:
        return None
    where = redact_url(url)
    what = f"search {where}: Bundle link {relation!r}"
    return resolve_checked_url(links[relation], url, what, lambda m: FhirError(m, 200, None, where))


def _self_link(links: dict[str, str], url: str) -> str | None:
    """``link[self]``, resolved, or None when absent or malformed: it is only read (which parameters the server
    applied), never followed, so a bad one fails nothing."""
    resolved = resolve_url(links["self"], url) if "self" in links else None
    return resolved if resolved is not None and url_problem(resolved) is None else None


def parse_search_bundle(url: str, body: Any, date_header: str | None) -> SearchPage:
    """Split a searchset Bundle into matches, includes and outcomes; resolve a relative ``next`` link."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise FhirError(f"search {redact_url(url)} returned {kind!r}, expected a Bundle", 200, None, redact_url(url))
    resources: list[dict[str, Any]] = []
    included: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for entry in body.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        resource: dict[str, Any] = entry["resource"]
        search = entry.get("search") if isinstance(entry.get("search"), dict) else {}
        mode = search.get("mode") if search else None
        if mode == "outcome" or (mode is None and resource.get("resourceType") == "OperationOutcome"):
            outcomes.append(resource)
        elif mode == "include":
            included.append(resource)
        else:
            resources.append(resource)
    links = {
        link["relation"]: link["url"]
        for link in reversed(body.get("link") or [])  # the first link of a relation wins
        if isinstance(link, dict) and isinstance(link.get("relation"), str) and isinstance(link.get("url"), str)
    }
    next_url = _link(links, "next", url)
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
    total = body.get("total")
    return SearchPage(
        url=url,
        resources=resources,
        bundle_meta_last_updated=parse_instant(meta.get("lastUpdated")) if meta else None,
        server_date=parse_http_date(date_header),
        included=included,
        outcomes=outcomes,
        next_url=next_url,
        total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        self_url=_self_link(links, url),
    )


def _page_reader(max_bytes: int | None) -> Any:
    return lambda response: _read_page(response, max_bytes)


def _read_page(response: httpx.Response, max_bytes: int | None = None) -> tuple[Any, str | None, str]:
    try:
        body = loads_exact(read_capped(response, max_bytes))
    except orjson.JSONDecodeError as exc:
        raise FhirError(
            f"search {redact_url(str(response.url))} returned a body that is not JSON",
            response.status_code,
            None,
            redact_url(str(response.url)),
        ) from exc
    return body, response.headers.get("Date"), str(response.url)


def _fetch_page(
    session: FhirSession, url: str, params: QueryParams | None, bounds: BodyBounds | None, first: bool
) -> SearchPage:
    """One page; after the first, an expired link (404/410) is a SearchLinkExpiredError (BDX-29)."""
    max_bytes = bounds.max_bytes if bounds is not None else None
    try:
        body, date_header, sent_url = session.request(
            "GET",
            url,
            params=params if first else None,
            headers={"Accept": _FHIR_JSON},
            token_rule=TokenRule.REQUIRE_BASE,
            handler=_page_reader(max_bytes),
            bounds=bounds,
        )
    except (FhirNotFoundError, FhirGoneError) as exc:
        if first:
            raise
        raise SearchLinkExpiredError(
            f"search paging link expired (HTTP {exc.status}); restart from the stored mark",
            exc.status,
            exc.operation_outcome,
            exc.url,
        ) from exc
    page = parse_search_bundle(sent_url, body, date_header)
    logger.debug(
        "search page",
        extra={"url": redact_url(sent_url), "matches": len(page.resources), "has_next": bool(page.next_url)},
    )
    return page


def _incomplete(first_url: str, seen: DistinctMatches, total: int | None, reason: str) -> SearchIncompleteError:
    received = len(seen)
    what = {
        "no_next": f"stopped early: total {total}, received {received}, no next link",
        "repeated_next": f"paging loops: the server repeated a next link after {received} matches",
        "repeated_page": f"paging repeats: a page with a next link brought no new match after {received} matches",
        "empty_pages": f"paging stalls: {MAX_EMPTY_PAGES + 1} pages in a row brought no match but a next link, "
        f"after {received} matches",
        "repeated_match": f"paging shifted: a match of an earlier page came again after {received} matches "
        "(offset paging over changing data skips one as it repeats one)",
    }[reason]
    return SearchIncompleteError(
        f"search {redact_url(first_url)} {what}", redact_url(first_url), received=received, total=total, reason=reason
    )


def _error_outcome(first_url: str, seen: DistinctMatches, total: int | None, page: SearchPage) -> SearchIncompleteError:
    """A page's OperationOutcome saying matches are missing (``outcomes.is_severe``): its severities and codes, never
    its diagnostics (a server may quote the patient there, and this message is logged and kept)."""
    said = "; ".join(dict.fromkeys(describe_outcome(o) for o in page.outcomes if is_severe(o)))
    return SearchIncompleteError(
        f"search {redact_url(first_url)} returned an OperationOutcome saying matches are missing after "
        f"{len(seen)} matches ({said})",
        redact_url(first_url),
        received=len(seen),
        total=total,
        reason="error_outcome",
    )


def _count_new(seen: DistinctMatches, resources: list[dict[str, Any]], searched: str | None) -> tuple[int, int]:
    """Record a page's matches: (how many were not seen before, how many an earlier page already sent).

    A match without a usable id counts as new; one sent twice on this page alone is neither. Only the ``searched``
    type's matches count as repeated: an entry of another type without ``search.mode`` is a resource a match refers
    to, which a server may send again on every page (the same Patient, the same Medication)."""
    new, on_page = 0, set()
    repeated = 0
    for resource in resources:
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str) or seen.add(rtype, rid):
            new += 1
        elif (rtype, rid) not in on_page and searched in (None, rtype):
            repeated += 1
        if isinstance(rtype, str) and isinstance(rid, str):
            on_page.add((rtype, rid))
    return new, repeated


def _stop_reason(
    page: SearchPage, counts: tuple[int, int], received: int, total: int | None, links: set[str]
) -> str | None:
    """Why the search cannot be trusted to be whole after this page (None: go on, or it ended whole).

    A match an earlier page sent coming again means the result set moved under an offset: one match was
    skipped for each one repeated, and a server giving no ``total`` shows it no other way."""
    new, repeated = counts
    if page.next_url is None:
        if total is not None and received < total:
            return "no_next"
    elif page.next_url in links:
        return "repeated_next"
    elif page.resources and not new:
        return "repeated_page"  # e.g. an offset ignored: page 1 again
    return "repeated_match" if repeated else None


def iter_search_pages(
    session: FhirSession,
    first_url: str,
    params: QueryParams | None,
    *,
    bounds: BodyBounds | None = None,
    resource_type: str | None = None,
    stop_at_repeat: bool = True,
) -> Iterator[SearchPage]:
    """Yield pages until there is no ``next`` link; an expired link (404/410) raises SearchLinkExpiredError.

    A searchset that did not return every match raises SearchIncompleteError *after* yielding every page it did
    send: the last page has no ``next`` although the largest ``total`` a page gave says more matches exist (distinct
    ``(resourceType, id)``: a server paging by offset over changing data repeats one match and skips another); a
    match of the searched ``resource_type`` (any type when None) of an earlier page comes again (that same shift on
    a server giving no ``total``); a page with a ``next``
    link brings no new match, or a ``next`` link repeats one already followed; or a page
    carries an OperationOutcome saying matches are missing (reason ``error_outcome``); or more than
    ``MAX_EMPTY_PAGES`` pages in a row bring no match but a ``next`` link (``empty_pages``: a cursor that never
    reaches data, each link new). The caller keeps what arrived but
    must not move its mark past what did not. Memory: see :mod:`connectors.fhir._distinct` (<= 32 B a match).
    ``stop_at_repeat`` False (a lookup, which has no mark to guard): a repeated match does not stop the paging; the
    search raises ``repeated_match`` at its end unless the largest ``total`` shows every match arrived.
    """
    url: str | None = first_url
    first = True
    links: set[str] = set()
    seen = DistinctMatches()
    # The largest ``total`` any page gave (some servers send it on the first page only). Not the latest: an offset
    # server's live total drops when a match already read is deleted, while the page behind it skipped one.
    total: int | None = None
    empty, repeated = 0, False  # pages in a row with a next link and no match; a match came again (read on)
    while url is not None:
        page = _fetch_page(session, url, params, bounds, first=first)
        links.add(page.url)
        counts = _count_new(seen, page.resources, resource_type)
        total = max(total or 0, page.total) if page.total is not None else total
        yield page
        if any(is_severe(o) for o in page.outcomes):
            raise _error_outcome(first_url, seen, total, page)
        empty = empty + 1 if page.next_url is not None and not page.resources else 0
        reason = _stop_reason(page, counts, len(seen), total, links)
        reason = reason or ("empty_pages" if empty > MAX_EMPTY_PAGES else None)
        if reason == "repeated_match" and not stop_at_repeat:
            reason, repeated = None, True
        if reason is not None:
            raise _incomplete(first_url, seen, total, reason)
        if page.next_url is not None:
            links.add(page.next_url)
        url = page.next_url
        first = False
    if repeated and (total is None or len(seen) < total):
        raise _incomplete(first_url, seen, total, "repeated_match")
