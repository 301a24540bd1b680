"""FHIR REST endpoints: search, read, Binary content and conditional create."""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.data.ids import ALL_TYPES
from sandbox.errors import ResourceGone, ResourceNotFound
from sandbox.faults import Fault
from sandbox.fhir.access import bearer
from sandbox.fhir.binary_refs import check_binary_refs
from sandbox.fhir.create_answers import accepted_answer, hashed_etag_answer, redirect_answer, settle_async, wants
from sandbox.fhir.discovery import WRITABLE
from sandbox.fhir.paging import sign, unsign
from sandbox.fhir.permission import permission
from sandbox.fhir.query import check_required, parse_query, split_ignored, subset, without_last_updated
from sandbox.fhir.responses import FhirFailure, fhir_response, http_date, outcome_body
from sandbox.fhir.search import natural_page, previous_last, sorted_page
from sandbox.fhir.validate import check_writable
from sandbox.shape_fault import reshape_searchset
from sandbox.state import SandboxState, get_state

log = logging.getLogger(__name__)
router = APIRouter()
Params = list[tuple[str, str]]


def _known(resource_type: str) -> None:
    if resource_type not in ALL_TYPES:
        raise FhirFailure(404, "not-supported", f"resource type {resource_type!r} is not supported")


def _prefers(request: Request, key: str) -> str | None:
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            k, _, v = item.strip().partition("=")
            if k.lower() == key:
                return v.strip().strip('"').lower()
    return None


def _category_granted(tokens: list[str], filters: tuple[tuple[tuple[str, str], ...], ...]) -> bool:
    """Whether any asked ``category`` code is one a granular scope (``?category=sys|code``) grants."""
    asked = {t.rpartition("|")[2] for t in tokens}
    granted = {v.rpartition("|")[2] for f in filters for k, v in f if k == "category"}
    return bool(asked & granted)


def _search_request(st: SandboxState, request: Request, resource_type: str) -> tuple[Params, Any, bool | None]:
    """The search's parameters, cursor and order: from the request, or from a signed paging link (``_cursor``)."""
    token = request.query_params.get("_cursor")
    if not token:
        return [(k, v) for k, v in request.query_params.multi_items()], None, None
    payload = unsign(st.page_secret, token, st.clock.timestamp())
    if payload.get("t") != resource_type:
        raise FhirFailure(404, "not-found", "paging link belongs to another search")
    return [(str(k), str(v)) for k, v in payload["p"]], payload["c"], bool(payload["o"])


def _searchset(
    fhir_base: str, stamp: str, links: list[dict[str, str]], page: list[dict[str, Any]], elements: list[str] | None
) -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"{fhir_base}/{r['resourceType']}/{r['id']}",
            "resource": subset(r, elements) if elements else r,
            "search": {"mode": "match"},
        }
        for r in page
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": stamp},
        "link": links,
        "entry": entries,
    }


@router.get("/fhir/{resource_type}", response_model=None)
def search(resource_type: str, request: Request) -> Response:
    st = get_state(request)
    _known(resource_type)
    rec = bearer(st, request)
    perm = permission(rec, resource_type, "s")
    cfg = st.settings
    params, cursor, sorted_mode = _search_request(st, request, resource_type)
    settle_async(st)  # creates accepted earlier (202) whose time has come are there now
    strict = _prefers(request, "handling") == "strict"
    check_required(resource_type, params, cfg.required_search_params.get(resource_type, []))
    used, ignored = split_ignored(params, cfg.ignored_params(resource_type), strict, cfg.refused_search_params)
    q = parse_query(resource_type, used, cfg.default_count, cfg.max_count, strict)
    if perm.filters is not None and any(not _category_granted(toks, perm.filters) for toks in q.categories):
        raise FhirFailure(403, "forbidden", "granted scopes do not cover the requested category")
    if sorted_mode is None:
        sorted_mode = q.sort is not None and not cfg.ignore_sort
    run = sorted_page if sorted_mode else natural_page
    page, next_cursor = run(st.store, q, perm, cursor)
    now = st.clock.now()
    fhir_base = st.fhir_base(request)
    reported = cfg.report_ignored_params != "silent" and cursor is None  # a paging link's query is opaque
    self_url = f"{fhir_base}/{resource_type}?{urlencode(used)}" if reported else str(request.url)
    links = [{"relation": "self", "url": self_url}]
    from_link = bool(request.query_params.get("_cursor"))
    taken = _paging_fault(st, request, next_cursor is not None, from_link)
    nonce: dict[str, str] = {}
    searched = (run, st, q, perm, cursor)
    page, next_cursor, total, outcomes = _faulted(taken, searched, page, next_cursor, links, request)
    if taken is not None and taken.kind == "search_empty_page":  # no match, and this same page again: a new token
        page, next_cursor, nonce = [], cursor, {"n": secrets.token_urlsafe(6)}
    if next_cursor is not None or nonce:
        link = {"t": resource_type, "p": params, "c": next_cursor, "o": sorted_mode, **nonce}
        nxt = sign(st.page_secret, {**link, "exp": now.timestamp() + cfg.page_link_ttl_s})
        links.append({"relation": "next", "url": f"{fhir_base}/{resource_type}?_cursor={nxt}"})
    if cfg.omit_last_updated:
        page = [without_last_updated(r) for r in page]
    bundle = _searchset(fhir_base, st.clock.stamp(now), links, page, q.elements)
    bundle["entry"] += [{"resource": o, "search": {"mode": "outcome"}} for o in outcomes]
    if ignored and cfg.report_ignored_params == "outcome":
        names = ", ".join(sorted(set(ignored)))
        warning = outcome_body("not-supported", f"search parameters ignored: {names}", "warning")
        bundle["entry"].append({"resource": warning, "search": {"mode": "outcome"}})
    if total is not None:
        bundle["total"] = total
    if taken is not None and taken.kind == "search_shape":  # sandbox.shape_fault
        bundle = reshape_searchset(bundle, taken.shape, st.store)
    return fhir_response(bundle, headers={"Date": http_date(now)})


Runner = Any  # natural_page or sorted_page


def _faulted(
    taken: Fault | None,
    search: tuple[Runner, SandboxState, Any, Any, Any],
    page: list[dict[str, Any]],
    next_cursor: Any,
    links: list[dict[str, str]],
    request: Request,
) -> tuple[list[dict[str, Any]], Any, int | None, list[dict[str, Any]]]:
    """The page as a ``search_*`` fault has it: (matches, next cursor, total to say, outcome entries)."""
    run, st, q, perm, cursor = search
    fault = taken.kind if taken is not None else None
    total: int | None = None
    outcomes: list[dict[str, Any]] = []
    if fault in ("search_no_next", "search_offset_shift", "search_deleted_shift"):  # the page says how many match
        total = len(run(st.store, replace(q, count=10**9), perm, None)[0])
    if fault == "search_no_next":  # ... but forgets the way to the rest
        next_cursor = None
    elif fault == "search_repeat_next":  # the next link leads back to this very page
        links.append({"relation": "next", "url": str(request.url)})
        next_cursor = None
    elif fault in ("search_offset_shift", "search_moved_match"):  # offset paging after an update moved the first
        # match to the end (search_moved_match: on a server that never says a total)
        page = run(st.store, replace(q, count=1), perm, None)[0] + page[1:]
    elif fault == "search_deleted_shift" and request.query_params.get("_cursor") and total is not None:
        page, total = page[1:], total - 1  # a match already read was deleted: offsets move up, the total drops
    elif fault == "search_overlap":  # pages that overlap by one: the previous page's last match comes first again
        page = previous_last(st.store, q, cursor) + page
    elif fault == "search_silent_skip":  # the same shift on a server that never says a total: undetectable
        page = page[1:]
    elif fault == "search_error_outcome" and taken is not None:  # some matches could not be returned, it says so
        diagnostics = taken.error_description or "simulated: some matches could not be returned"
        said = outcome_body("incomplete", diagnostics, taken.severity)
        page, outcomes = page[:-1], [said]
    return page, next_cursor, total, outcomes


def _paging_fault(st: SandboxState, request: Request, has_next: bool, from_link: bool) -> Fault | None:
    """A ``search_*`` fault, consumed only by a page it can affect: ``search_error_outcome``, ``search_empty_page``,
    ``search_shape`` and ``search_deleted_shift`` any page (the first one says the whole total, later ones shift and
    say one less), ``search_no_next`` one with a next link, ``search_offset_shift``, ``search_moved_match``,
    ``search_silent_skip`` and ``search_overlap`` one reached by a next link, and
    ``search_repeat_next`` one reached by a next link that has a next link itself."""
    kinds = {"search_error_outcome", "search_deleted_shift", "search_empty_page", "search_shape"}
    kinds |= (
        {"search_offset_shift", "search_moved_match", "search_silent_skip", "search_overlap"} if from_link else set()
    )
    kinds |= ({"search_no_next", "search_repeat_next"} if from_link else {"search_no_next"}) if has_next else set()
    return st.faults.take(request.url.path, frozenset(kinds))


def _read(st: SandboxState, request: Request, resource_type: str, resource_id: str) -> dict[str, Any]:
    _known(resource_type)
    perm = permission(bearer(st, request), resource_type, "r")
    try:
        resource = st.store.read(resource_type, resource_id)
    except ResourceGone:
        raise FhirFailure(410, "deleted", f"{resource_type}/{resource_id} was deleted") from None
    except ResourceNotFound:
        raise FhirFailure(404, "not-found", f"{resource_type}/{resource_id} is not known") from None
    if not perm.allows(resource):
        raise FhirFailure(403, "forbidden", "granted scopes do not cover this resource")
    return without_last_updated(resource) if st.settings.omit_last_updated else resource


def _version_headers(r: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'W/"{r.get("meta", {}).get("versionId", "1")}"'}


@router.get("/fhir/{resource_type}/{resource_id}", response_model=None)
def read(resource_type: str, resource_id: str, request: Request) -> Response:
    st = get_state(request)
    resource = _read(st, request, resource_type, resource_id)
    accept = request.headers.get("accept", "").lower()
    wants_fhir = "fhir+json" in accept or "application/json" in accept or request.query_params.get("_format")
    if resource_type == "Binary" and not wants_fhir:
        try:
            content = base64.b64decode(str(resource.get("data", "")), validate=True)
        except binascii.Error:
            raise FhirFailure(500, "exception", "stored Binary data is not valid base64") from None
        ctype = str(resource.get("contentType", "application/octet-stream"))
        return Response(content, media_type=ctype, headers=_version_headers(resource))
    return fhir_response(resource, headers=_version_headers(resource))


@router.post("/fhir/{resource_type}", response_model=None)
async def create(resource_type: str, request: Request) -> Response:
    st = get_state(request)
    provenance = resource_type == "Provenance" and st.settings.provenance_create  # DWB-82: create-only
    if not provenance:
        _known(resource_type)
    if not (provenance or resource_type in WRITABLE) or not st.settings.write_enabled:
        raise FhirFailure(405, "not-supported", f"create is not supported for {resource_type}")
    perm = permission(bearer(st, request), resource_type, "c")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise FhirFailure(400, "structure", "request body is not JSON") from None
    check_writable(resource_type, body)
    if not perm.allows(body):
        raise FhirFailure(403, "forbidden", "granted scopes do not cover this patient")
    check_binary_refs(st, request, resource_type, body)  # a note's Binary must be held (fault ``binary_gone``)
    fhir_base = st.fhir_base(request)
    mode = wants(st, request, resource_type)
    if mode in ("temporary_redirect", "permanent_redirect"):
        return redirect_answer(st, request, mode, None)
    if mode in ("async", "accepted"):
        return accepted_answer(st, request, mode, body)
    condition = request.headers.get("if-none-exist") if st.settings.conditional_create else None
    if condition:
        pairs = parse_qsl(condition.lstrip("?"))
        if st.settings.if_none_exist_ignores_params:  # a server dropping them here as in searches (Spark #520)
            pairs, _ = split_ignored(pairs, st.settings.ignored_search_params)
        q = parse_query(resource_type, pairs, 2, 2, strict=True)
        found, _ = natural_page(st.store, q, perm, None)
        if len(found) > 1:
            raise FhirFailure(412, "duplicate", "If-None-Exist matched more than one resource")
        if found:
            return _answer(request, mode, found[0], 200, fhir_base)
    created = st.store.create({k: v for k, v in body.items() if k not in st.settings.create_drops_fields})
    log.info("created %s/%s", resource_type, created["id"])
    return _answer(request, mode, created, 201, fhir_base)


def _answer(request: Request, mode: str, r: dict[str, Any], status: int, fhir_base: str) -> Response:
    """The processed create's answer: its own, or a 303/302 to it (``create_answer``)."""
    if mode in ("see_other", "found"):
        return redirect_answer(get_state(request), request, mode, f"{fhir_base}/{r['resourceType']}/{r['id']}")
    return _write_response(request, r, status, fhir_base)


def _write_response(request: Request, r: dict[str, Any], status: int, fhir_base: str) -> Response:
    version, params = r.get("meta", {}).get("versionId", "1"), get_state(request).settings.create_location_params
    headers = {
        **_version_headers(r),
        "Location": f"{fhir_base}/{r['resourceType']}/{r['id']}/_history/{version}{params}",
        "Last-Modified": r.get("meta", {}).get("lastUpdated", ""),
    }
    if get_state(request).settings.create_collection_location:  # the type's collection: no id, the body as asked
        headers["Location"] = f"{fhir_base}/{r['resourceType']}"
    prefer = _prefers(request, "return")
    if get_state(request).settings.create_bare_answer:  # a server (or gateway) naming neither id nor body
        return Response(status_code=status)
    if get_state(request).settings.create_unversioned_location:
        unversioned = {**_version_headers(r), "Location": f"{fhir_base}/{r['resourceType']}/{r['id']}{params}"}
        return Response(status_code=status, headers=unversioned)
    if get_state(request).settings.create_hashed_etag:  # a framework's hash of the body as its ETag
        return hashed_etag_answer(r, status, fhir_base)
    if get_state(request).settings.create_html_body:  # a gateway's page in place of the FHIR answer's body
        return Response(b"<html><body><h1>Created</h1></body></html>", status, headers, media_type="text/html")
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "operationoutcome":
        return fhir_response(
            outcome_body("informational", "created" if status == 201 else "exists", "information"), status, headers
        )
    return fhir_response(r, status, headers)
