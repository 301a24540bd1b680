"""What a create's answer means, beyond 200/201 (FHIR R4 http.html "create" and "async"; RFC 9110 §15.3.3, §15.4).

- 202 Accepted: the server took the request to process later (FHIR's asynchronous pattern). Nothing is known to be
  created yet: ``Content-Location`` names a status endpoint, never the new resource (its id is not taken from it).
  :func:`read_async_status` reads one answer of that endpoint: 202 still working, or the finished request's
  outcome (a ``batch-response`` Bundle whose entry carries the original create's status, ``Location`` and
  OperationOutcome; a server answering the resource itself is read as a 200 with it).
- 303 See Other, and 302 Found (clients treat it as 303 after a POST, RFC 9110 §15.4.3): the server processed the
  POST and points at its result, which a GET of ``Location`` shows. ``FhirClient.create`` reads it only under the
  FHIR base (the token never leaves it, SAL-40); elsewhere it raises ``CreateRedirectError`` (processed).
- 301, 307, 308: the POST was not processed and is to be sent to ``Location``. It is sent again there only under
  the FHIR base (the note and the token never go to another host or path), at most ``MAX_HOPS`` times; otherwise
  ``CreateRedirectError`` (not processed: nothing was stored). The redirect's own request may have had a try whose
  answer was lost (:func:`unanswered`): the follow-up's error then carries ``after_lost_answer`` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from connectors.errors import AsyncStatusUnreadableError, CreateRedirectError, FhirError, fhir_error_for_status
from connectors.fhir._exact_json import loads_exact
from connectors.fhir.ids import fhir_id, id_problem
from connectors.http import is_within_base, parse_retry_after, redact_url, resolve_url
from connectors.transport.answers import outcome_without_credentials
from connectors.transport.bounds import read_capped
from connectors.transport.plan import plan_of

__all__ = [
    "FHIR_JSON",
    "MAX_HOPS",
    "REDIRECTS",
    "SEE_OTHER",
    "AsyncStatus",
    "CreateResult",
    "create_headers",
    "parse_location",
    "read_async_status",
    "result_of",
    "unanswered",
]

FHIR_JSON = "application/fhir+json"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
SEE_OTHER = frozenset({302, 303})
MAX_HOPS = 3


@dataclass(frozen=True)
class CreateResult:
    """Outcome of a create: 201 = new resource, 200 = an ``If-None-Exist`` match already existed, 302/303 = the
    result a redirect pointed at (read), 202 = accepted for later processing (``status_url``: where to ask)."""

    status: int
    id: str | None
    location: str | None
    resource: dict[str, Any] | None
    version_id: str | None = None
    status_url: str | None = None
    id_not_fhir: str | None = None

    @property
    def created(self) -> bool:
        return self.status == 201

    @property
    def accepted(self) -> bool:
        return self.status == 202


@dataclass(frozen=True)
class AsyncStatus:
    """One answer of an async status endpoint: ``result`` (done, 2xx), ``error`` (done, refused) or neither (still
    working; ``retry_after``: the seconds the server asked to wait, when it said)."""

    result: CreateResult | None = None
    error: FhirError | None = None
    retry_after: float | None = None


def parse_location(location: str, resource_type: str | None = None) -> tuple[str | None, str | None]:
    """``(id, version_id)`` from a Location header: relative or absolute, with or without ``/_history/n``; one urllib
    cannot split (an unclosed ``[``) names nothing, as a missing header, so a write that succeeded is not lost. Each
    segment loses its parameters (RFC 3986 §3.3: ``123;jsessionid=A1`` is segment ``123``, as Java servlet containers
    rewrite URLs; a FHIR id holds no ``;``), then is percent-decoded (§6.2.2.2: ``a%2Db`` is ``a-b``, an encoded
    ``%3B`` no parameter). A segment of parameters alone (``Type/;jsessionid=A1``) is kept, empty: it names no id, where
    dropped the resource type before it would be taken for one.

    A trailing ``/`` leaves the last segment empty, which names no id (``.../DocumentReference/``), unless the two
    before it are ``resource_type`` (the type created) and an id: ``.../DocumentReference/123/`` is FHIR's
    ``[type]/[id]`` with an empty segment after it (no FHIR id is empty), so it names ``123``. The type created is
    never taken for its id (``.../DocumentReference``, ``DocumentReference?_id=123``: its collection, naming none)."""
    try:
        path = urlsplit(location).path
    except ValueError:
        return None, None
    *inner, last = path.split("/")
    # empty inner segments (a leading or doubled "/") name nothing; a trailing "/" leaves the last one empty
    segments = [unquote(s.split(";", 1)[0]) for s in (*(s for s in inner if s), last)]
    if "_history" in segments:
        at = segments.index("_history")
        version = segments[at + 1] if at + 1 < len(segments) else None
        return _id_at(segments, at - 1, resource_type), version or None
    if len(segments) >= 3 and segments[-1] == "" and resource_type and segments[-3] == resource_type:
        return _id_at(segments, len(segments) - 2, resource_type), None  # ``[type]/[id]/``: the id before the "/"
    return _id_at(segments, len(segments) - 1, resource_type), None


def _id_at(segments: list[str], at: int, resource_type: str | None) -> str | None:
    """The id segment ``at`` names: none when there is none or it is empty, nor when it is the type created not after
    that type (``[base]/Binary``, ``Binary?_id=12``: the type's collection, no resource; taken for the id, a note would
    reference ``Binary/Binary``, which holds nothing of it). ``Binary/Binary`` is FHIR's ``[type]/[id]``: ``Binary``."""
    if at < 0 or at >= len(segments) or not segments[at]:
        return None
    if resource_type and segments[at] == resource_type and (at == 0 or segments[at - 1] != resource_type):
        return None
    return segments[at]


_ETAG = re.compile(r'(?:W/)?"([A-Za-z0-9\-.]{1,64})"')


def version_of_etag(etag: str | None) -> str | None:
    """The version an ``ETag`` names (FHIR R4 §3.1.0.8: ``W/"3"``; a strong ``"3"`` read the same), else None."""
    match = _ETAG.fullmatch(etag.strip()) if etag else None
    return match.group(1) if match else None


def result_of(
    status: int, location: str | None, body: Any, resource_type: str, etag: str | None = None
) -> CreateResult:
    """A CreateResult from a 2xx: the id and version from ``Location`` (relative or absolute, maybe ``/_history/n``),
    else from the body when it is a ``resource_type``, and the version else from ``etag`` (a server may answer a
    create with a ``Location`` without ``/_history`` and no body: the version was lost, so a Provenance named none;
    the caller passes the ETag only of an answer without a body, whose ETag a framework may have made its hash).
    Ids and versions that are no FHIR id are read as not named (``id_not_fhir`` says so for the id), as is a
    ``Location`` id whose dropped segment parameters the body's id shows to be part of it (``s;1`` named ``s``)."""
    named_id, named_version = parse_location(location, resource_type) if location else (None, None)
    returned = body if isinstance(body, dict) and body.get("resourceType") == resource_type else None
    body_id: Any = None
    body_version: Any = None
    if returned is not None:
        meta = returned.get("meta") if isinstance(returned.get("meta"), dict) else {}
        body_id, body_version = returned.get("id"), meta.get("versionId") if meta else None
    if named_id and isinstance(body_id, str) and body_id.startswith(f"{named_id};"):
        named_id = None  # the body shows the Location's ";" is its id's own (no FHIR id), no segment parameter
    resource_id = fhir_id(named_id) or fhir_id(body_id)  # ids that are no FHIR id are named by none (``ids``)
    named = [v for v in (named_id, body_id) if v is not None and v != ""]
    not_fhir = id_problem(named[0]) if named and resource_id is None else None
    version = fhir_id(named_version) or fhir_id(body_version) or version_of_etag(etag)
    return CreateResult(status, resource_id, location, returned, version, id_not_fhir=not_fhir)


def read_async_status(response: httpx.Response, resource_type: str, max_bytes: int | None) -> AsyncStatus:
    """Read a status endpoint's 202 (working) or 2xx (done); a body naming no outcome is an
    ``AsyncStatusUnreadableError`` (the outcome is not known from it: no refusal)."""
    url = redact_url(str(response.url))
    if response.status_code == 202:
        return AsyncStatus(retry_after=parse_retry_after(response.headers.get("Retry-After")))
    data = read_capped(response, max_bytes)
    try:
        body = loads_exact(data) if data else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("resourceType") == resource_type:
        return AsyncStatus(result=result_of(200, response.headers.get("Location"), body, resource_type))
    entry = _first_entry(body)
    answer = entry.get("response") if entry is not None else None
    if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
        raise AsyncStatusUnreadableError(
            f"async status {url} answered a body that names no outcome", response.status_code, None, url
        )
    try:
        status = int(answer["status"].split()[0])
    except (ValueError, IndexError):
        raise AsyncStatusUnreadableError(
            f"async status {url} names an unreadable status", response.status_code, None, url
        ) from None
    location = answer.get("location") if isinstance(answer.get("location"), str) else None
    if 200 <= status < 300:
        return AsyncStatus(result=result_of(status, location, entry.get("resource") if entry else None, resource_type))
    said = answer.get("outcome")  # the job's OperationOutcome, maybe quoting the poll's own token
    outcome = outcome_without_credentials(said, response) if isinstance(said, dict) else None
    return AsyncStatus(
        error=fhir_error_for_status(status)(f"the accepted create ended HTTP {status} ({url})", status, outcome, url)
    )


def _first_entry(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    if body.get("type") not in ("batch-response", "transaction-response"):
        return None
    entries = body.get("entry")
    first = entries[0] if isinstance(entries, list) and entries else None
    return first if isinstance(first, dict) else None


def status_url(response: httpx.Response) -> str | None:
    """A 202's status endpoint (``Content-Location``), resolved against the request URL; None when absent."""
    where = response.headers.get("Content-Location")
    return resolve_url(where, str(response.request.url)) if where else None


def followed_to(result: CreateResult, base: str, resource_type: str) -> str:
    """Where a create's redirect leads, when that is under the FHIR base ``base``; else ``CreateRedirectError``."""
    target = result.location
    if target is None or not is_within_base(target, base):
        where = redact_url(target) if target else "nowhere"
        raise CreateRedirectError(
            f"create {resource_type} answered HTTP {result.status} to {where}, not under the FHIR base: not followed "
            "(the note and the token stay with the FHIR server)",
            result.status,
        )
    return target


def create_headers(if_none_exist: str | None, *, prefer_representation: bool) -> dict[str, str]:
    """A create's headers: FHIR JSON, ``Prefer: return=representation`` when asked, ``If-None-Exist`` when given (a
    single-line search query, else ValueError: a line break would forge headers)."""
    headers = {"Accept": FHIR_JSON, "Content-Type": f"{FHIR_JSON}; charset=utf-8"}
    if prefer_representation:
        headers["Prefer"] = "return=representation"
    if if_none_exist is not None:
        if not if_none_exist or "\n" in if_none_exist or "\r" in if_none_exist:
            raise ValueError("if_none_exist must be a non-empty single-line search query")
        headers["If-None-Exist"] = if_none_exist
    return headers


def unanswered(response: httpx.Response) -> bool:
    """Whether an earlier try of the request ``response`` answers may have been processed, its answer lost (the
    plan's ``unanswered``): a redirect's follow-up is a new request, so ``FhirClient.create`` carries this over."""
    plan = plan_of(response.request)
    return plan is not None and plan.unanswered
