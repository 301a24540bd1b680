"""One searchset page as ehrsync reads it (BDX-29): its matches, includes, outcomes, links and server times."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.errors import FhirError
from connectors.http import parse_http_date, parse_instant, redact_url, resolve_checked_url, resolve_url, url_problem
from connectors.transport.issues import issue_summary

__all__ = ["SearchPage", "parse_search_bundle"]


@dataclass(frozen=True)
class SearchPage:
    """One searchset Bundle page.

    ``resources`` are the matches only; ``included`` holds ``search.mode=include`` entries, and on a search of one
    type the entries of another type with no ``search.mode`` (R4: 0..1; a server sends so the Patient the matches
    refer to, or an ``_include``); ``outcomes`` any OperationOutcome entries (an error/fatal one makes the search
    incomplete; the others are notices).
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


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "string" if isinstance(value, str) else "null"


def _malformed(url: str, what: str) -> FhirError:
    where = redact_url(url)
    return FhirError(f"search {where} returned a Bundle whose {what}", 200, None, where)


def _array(body: dict[str, Any], name: str, url: str) -> list[Any]:
    """``Bundle.<name>`` (absent or null: none). FHIR's JSON writes a repeating element as an array even with one
    item; a bare object (a naive XML-to-JSON converter's) read as none dropped the page's one match, or its ``next``
    link, and the mark moved past them: it is a FhirError naming the element instead."""
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(url, f"Bundle.{name} is a JSON {_json_kind(value)}, not an array")
    return value


def _entries(body: dict[str, Any], url: str, searched: str | None) -> tuple[list[dict[str, Any]], ...]:
    """(matches, includes, outcomes). An entry with no ``resource`` holds nothing to land; one that is not an
    object, or whose ``resource`` is not one, holds what cannot be read: a FhirError, never skipped unseen. An
    entry with no mode whose resource is of a type other than the ``searched`` one cannot be a match of it: an
    include (landed as a match it was quarantined, as of the wrong type, and counted toward ``total``)."""
    resources: list[dict[str, Any]] = []
    included: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for i, entry in enumerate(_array(body, "entry", url)):
        if not isinstance(entry, dict):
            raise _malformed(url, f"Bundle.entry[{i}] is a JSON {_json_kind(entry)}, not an object")
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, dict):
            raise _malformed(url, f"Bundle.entry[{i}].resource is a JSON {_json_kind(resource)}, not an object")
        search = entry.get("search") if isinstance(entry.get("search"), dict) else {}
        mode = search.get("mode") if search else None
        if mode == "outcome" or (mode is None and resource.get("resourceType") == "OperationOutcome"):
            outcomes.append(resource)
        elif mode == "include" or (mode is None and _other_type(resource, searched)):
            included.append(resource)
        else:
            resources.append(resource)
    return resources, included, outcomes


def _other_type(resource: dict[str, Any], searched: str | None) -> bool:
    rtype = resource.get("resourceType")
    return searched is not None and isinstance(rtype, str) and rtype != searched


def _links(body: dict[str, Any], url: str) -> dict[str, str]:
    """``Bundle.link`` by relation in lower case (RFC 8288 compares relation types case-insensitively and FHIR R4's
    ``relation`` is a plain string: a server's ``Next`` is the next page), the first link of a relation winning. A
    ``next`` link without a URL string is a FhirError: read as no link, it ended the paging as if complete."""
    links: dict[str, str] = {}
    for i, link in enumerate(_array(body, "link", url)):
        if not isinstance(link, dict) or not isinstance(link.get("relation"), str):
            continue
        relation, target = link["relation"].lower(), link.get("url")
        if relation in links:
            continue
        if isinstance(target, str):
            links[relation] = target
        elif relation == "next":
            raise _malformed(url, f"Bundle.link[{i}] (next) has a url that is a JSON {_json_kind(target)}")
    return links


def _not_a_bundle(url: str, body: Any) -> FhirError:
    """A 200 that is no Bundle. An OperationOutcome (a server answering an error with 200) is kept on the error and
    described as error statuses are (``issue_summary``: severity, code, expression, coding codes, never its
    diagnostics, which may quote the patient), so the run says why and ``issue_codes``/``is_transient`` read it as
    they do an error status's."""
    where = redact_url(url)
    kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
    outcome = body if isinstance(body, dict) and kind == "OperationOutcome" else None
    summary = issue_summary(outcome) if outcome is not None else None
    said = f" (issues: {summary})" if summary else ""
    return FhirError(f"search {where} returned {kind!r}, expected a Bundle{said}", 200, outcome, where)


def parse_search_bundle(url: str, body: Any, date_header: str | None, resource_type: str | None = None) -> SearchPage:
    """Split a searchset Bundle into matches, includes and outcomes; resolve a relative ``next`` link.
    ``resource_type``: the type searched (None: a search of any type, where every unmarked entry is a match)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise _not_a_bundle(url, body)
    resources, included, outcomes = _entries(body, url, resource_type)
    links = _links(body, url)
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
