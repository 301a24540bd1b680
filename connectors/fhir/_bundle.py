"""One searchset page as ehrsync reads it (BDX-29): its matches, includes, outcomes, links and server times."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.errors import FhirError
from connectors.http import parse_http_date, parse_instant, redact_url, resolve_checked_url, resolve_url, url_problem

__all__ = ["SearchPage", "parse_search_bundle"]


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
