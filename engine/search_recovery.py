"""Recovering a searchset that did not return every match (``total`` larger than the distinct matches that
arrived with no ``next`` link, a ``next`` link or a page that repeats, an error OperationOutcome entry) without
a full sync.

First the same search again, asking for every match in one page when ``total`` is known and modest (a server
that cannot page), else with smaller pages (skipped when the server refuses that ``_count`` with 400/422); then,
when the search is incremental (the server supports ``_lastUpdated``), the window from the stored mark to this
run's mark split into narrower ``ge``/``lt`` windows (as many as ``total`` suggests) until every window
completes, within a bounded number of searches. What cannot be recovered is reported, and the caller keeps the
stored mark so the next run asks again. A search of the plan that stalls on empty pages (a ``next`` link on every
page and no match, ``empty_pages``) after an earlier one did, in a narrower window or where no window can be
searched, shows an endless cursor: the plan fails at once (``ENDLESS_PREFIX``), not after 64 windows each walking
the same hundred-odd empty pages (~6,600 requests). The larger-page retry stalling again proves nothing alone: a
server may cap ``_count`` (FHIR R4 search), so its pages were no larger, and one narrower window is still tried.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Protocol

from connectors.errors import FhirError, SearchIncompleteError
from connectors.fhir import FhirClient, SearchPage
from connectors.fhir.outcomes import search_notices
from connectors.transport.issues import codes_said

__all__ = [
    "ENDLESS_PREFIX",
    "MAX_WINDOW_SEARCHES",
    "PageSink",
    "format_instant",
    "search_plan",
    "search_with_recovery",
]

_log = logging.getLogger(__name__)
MAX_WINDOW_SEARCHES = 64
MAX_RECOVERY_COUNT = 1000  # the largest one-page retry asked for (servers cap _count anyway)
MAX_SPLIT = 8
MIN_WINDOW = timedelta(milliseconds=2)
#: Starts the warning of a plan given up on an endless cursor (``engine.incremental`` fails the type with it).
ENDLESS_PREFIX = "endless paging:"
EMPTY_PAGES = "empty_pages"
Params = list[tuple[str, str]]


class PageSink(Protocol):
    """Takes pages (deduplicating what a recovery search returns again) and the run's warnings."""

    @property
    def mark(self) -> datetime | None: ...

    def add(self, page: SearchPage, first: bool) -> None: ...

    def warn(self, message: str) -> None: ...

    def notice(self, message: str) -> None:
        """What the server noted (a warning/information OperationOutcome entry): no diagnostics, deduplicated."""


def format_instant(value: datetime) -> str:
    """A FHIR instant in UTC with ``Z`` (the form every server parses)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _search(client: FhirClient, resource_type: str, params: Params, sink: PageSink) -> SearchIncompleteError | None:
    first = True
    try:
        for page in client.search_pages(resource_type, params, count=None):
            sink.add(page, first)
            for notice in search_notices(resource_type, page.outcomes):
                sink.notice(notice)
            first = False
    except SearchIncompleteError as exc:
        return exc
    return None


def _retry(client: FhirClient, resource_type: str, params: Params, sink: PageSink) -> str | None:
    """The same search again with another ``_count``: None when it recovered, else why not (the reason it stopped,
    or ``refused``: a server refusing that ``_count`` (400/422: over its maximum) only means this retry is not
    possible, so the caller goes on to narrower windows)."""
    count = dict(params).get("_count")
    try:
        problem = _search(client, resource_type, params, sink)
        if problem is None:
            sink.warn(f"recovered: searched {resource_type} again with _count={count}")
            return None
        return problem.reason
    except FhirError as exc:
        if exc.status not in (400, 422):
            raise
        said = codes_said(exc.operation_outcome)  # cleaned, capped: this warning is logged
        codes = f", issues: {said}" if said else ""
        sink.warn(f"the server refused _count={count} (HTTP {exc.status}{codes}): that retry is not possible")
        _log.info("%s retry with _count=%s refused (HTTP %s)", resource_type, count, exc.status)
    return "refused"


def _endless(sink: PageSink, resource_type: str) -> bool:
    """Give the plan up: another search stalled on empty pages, each with a new ``next`` link (False)."""
    sink.warn(
        f"{ENDLESS_PREFIX} the {resource_type} search sent page after page with no match and a new next link, "
        "again when searched once more (with larger pages, in a narrower _lastUpdated window): an endless cursor, "
        "not searched again"
    )
    _log.warning("%s search stalls on an endless cursor of empty pages; giving it up", resource_type)
    return False


def search_plan(
    client: FhirClient, resource_type: str, plan: dict[str, str], sink: PageSink, since: datetime | None
) -> bool:
    """``search_with_recovery``, and an incremental search the server refuses with 400/422 searched again without
    ``_lastUpdated``: servers refuse it on types that lack it although declared or a vendor default (Oracle
    Health, vendors.md §3). The whole type is a superset (upserts absorb what did not change); failing instead
    would fail the type on every run, and no change of it would ever arrive."""
    refused = None
    try:
        return search_with_recovery(client, resource_type, plan, sink, since)
    except FhirError as exc:
        if exc.status not in (400, 422) or "_lastUpdated" not in plan:
            raise
        refused = exc
    said = codes_said(refused.operation_outcome)  # cleaned, capped: this warning is logged
    codes = f", issues: {said}" if said else ""
    sink.warn(
        f"the server refused _lastUpdated on {resource_type} (HTTP {refused.status}{codes}): searched all of it instead"
    )
    _log.info("%s search with _lastUpdated refused (HTTP %s); searching it whole", resource_type, refused.status)
    whole = {k: v for k, v in plan.items() if k != "_lastUpdated"}
    return search_with_recovery(client, resource_type, whole, sink, None)


def search_with_recovery(
    client: FhirClient, resource_type: str, plan: dict[str, str], sink: PageSink, since: datetime | None
) -> bool:
    """Run one search plan into ``sink``; True when every match arrived (possibly after recovering).

    ``since`` (the lower bound the plan searched from) enables ``_lastUpdated`` windows; None means only the
    smaller-page retry is possible.
    """
    problem = _search(client, resource_type, list(plan.items()), sink)
    if problem is None:
        return True
    sink.warn(problem.message)  # no server diagnostics (none in any message): warnings are logged
    _log.warning("%s; searching again", problem.message)
    count = _count_of(plan)
    total = problem.total
    if problem.reason == EMPTY_PAGES:  # rows filtered out after paging: larger pages, fewer empty ones
        again = min(count * 4, MAX_RECOVERY_COUNT)
    else:
        again = total if total is not None and count < total <= MAX_RECOVERY_COUNT else max(count // 2, 1)
    retry = [(k, v) for k, v in plan.items() if k != "_count"] + [("_count", str(again))]
    retried = _retry(client, resource_type, retry, sink)
    if retried is None:
        return True
    stalls = [problem.reason, retried].count(EMPTY_PAGES)
    upper = sink.mark
    if since is None or upper is None or upper <= since:
        if stalls > 1:  # no window to try: the search and its retry are all there is
            return _endless(sink, resource_type)
        sink.warn(f"not recovered: {resource_type} kept stopping early; the next run asks for it again")
        return False
    base = [(k, v) for k, v in plan.items() if k not in ("_count", "_lastUpdated")] + [("_count", str(count))]
    return _windows(client, resource_type, base, sink, (since, upper), _parts(total, count), stalls)


def _parts(total: int | None, count: int) -> int:
    """How many windows to split a window into: enough for one page each if matches were spread evenly."""
    if total is None:
        return 2
    return min(max(-(-total // count), 2), MAX_SPLIT)


def _windows(
    client: FhirClient,
    resource_type: str,
    base: Params,
    sink: PageSink,
    span: tuple[datetime, datetime],
    parts: int,
    stalls: int,
) -> bool:
    """Search ``span`` in ``parts`` windows, splitting any that stop early (at most MAX_WINDOW_SEARCHES); a window
    that stalls on empty pages after an earlier search of the plan did (``stalls``) ends them (``_endless``)."""
    count = _count_of(dict(base))
    stack = _split(span[0], span[1], parts)
    searches = 0
    while stack:
        lo, hi = stack.pop()
        window = [("_lastUpdated", f"ge{format_instant(lo)}"), ("_lastUpdated", f"lt{format_instant(hi)}")]
        searches += 1
        problem = _search(client, resource_type, base + window, sink)
        if problem is None:
            continue
        stalls += problem.reason == EMPTY_PAGES
        if stalls > 1:
            return _endless(sink, resource_type)
        pieces = _parts(problem.total, count)
        if searches + len(stack) + pieces > MAX_WINDOW_SEARCHES or hi - lo <= MIN_WINDOW:
            sink.warn(
                f"not recovered: {resource_type} window ge{format_instant(lo)} lt{format_instant(hi)} still stops "
                f"early after {searches} window searches; the stored mark is kept for the next run"
            )
            return False
        stack.extend(_split(lo, hi, pieces))
    sink.warn(f"recovered: searched {resource_type} in {searches} narrower _lastUpdated windows")
    _log.info("recovered the %s search in %d _lastUpdated windows", resource_type, searches)
    return True


def _split(lo: datetime, hi: datetime, parts: int) -> list[tuple[datetime, datetime]]:
    step = (hi - lo) / parts
    edges = [lo + step * i for i in range(parts)] + [hi]
    return list(pairwise(edges))[::-1]  # popped oldest first


def _count_of(plan: dict[str, str]) -> int:
    try:
        return max(int(plan.get("_count", "200")), 1)
    except ValueError:
        return 200
