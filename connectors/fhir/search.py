"""FHIR search paging (BDX-26..33): follow ``link[next]`` verbatim, one page in memory, server-clock marks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
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
from connectors.fhir._bundle import SearchPage, parse_search_bundle
from connectors.fhir._distinct import DistinctMatches
from connectors.fhir._exact_json import loads_exact
from connectors.fhir._session import FhirSession, QueryParams, TokenRule
from connectors.fhir.outcomes import describe_outcome, is_severe
from connectors.http import redact_url
from connectors.transport.bounds import BodyBounds, read_capped

__all__ = ["MAX_EMPTY_PAGES", "SearchPage", "iter_search_pages", "parse_search_bundle"]

logger = logging.getLogger(__name__)

#: Consecutive pages with no match but a ``next`` link that are still followed: a server filtering its pages after
#: paging them (Epic's post-filtered parameters, access rules, deleted rows) sends a run of them while it pages past
#: rows its filter drops, dozens for a long record. One more ends the search (``empty_pages``): a cursor that changes
#: on every empty page repeats no link. Generous on purpose: the step budget (``EHRSYNC_STEP_BUDGET_S``) bounds time.
MAX_EMPTY_PAGES = 100

_FHIR_JSON = "application/fhir+json"


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
    session: FhirSession,
    url: str,
    params: QueryParams | None,
    bounds: BodyBounds | None,
    first: bool,
    resource_type: str | None,
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
    page = parse_search_bundle(sent_url, body, date_header, resource_type)
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
    type's matches count as repeated: an entry of another type without ``search.mode`` (a resource a match refers
    to, which a server may send again on every page) is an include of a type search (``parse_search_bundle``),
    and of a search of any type (``searched`` None) it may be the same Patient, the same Medication, on each page."""
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
        page = _fetch_page(session, url, params, bounds, first=first, resource_type=resource_type)
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
