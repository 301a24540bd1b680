"""Create answers other than 201/200 that real FHIR servers give (DWB-50), as ``create_answer`` says, for the types
of ``create_answer_types`` (DocumentReference unless told):

- ``async``: FHIR's asynchronous pattern (R4 http.html#async): 202 with ``Content-Location`` of a status endpoint
  (``/fhir/_async/{job}``), which answers 202 until the job is done, then 200 with a ``batch-response`` Bundle whose
  entry holds the create's own answer (201 + location + the resource, or 422 + OperationOutcome).
  ``create_async_status`` ``lost``: the endpoint answers 404 for every job; ``outcome``: 200 with an informational
  OperationOutcome while the job runs (no batch-response: it names no outcome of the create); ``moved``: 307 to
  the job's status on another node (``?node=2``, which answers as ``batch``), as a load balancer pinning a job does;
  ``gateway``: 400 with an HTML page and no OperationOutcome, as a proxy in front of it refusing the poll does;
  ``unnamed``/``collection``: the done job's entry is a 201 naming no id (no location, or one naming only the
  type's collection; no resource), though the resource is stored, as a server losing the id in its job does.
  While a job runs its status endpoint says ``Retry-After: 1``, or ``create_async_retry_after`` verbatim (``0``: poll
  again at once; an HTTP-date; empty: none). With ``create_redirect_origin`` set, ``Content-Location`` names that
  origin: a status endpoint off the FHIR base.
- ``accepted``: a bare 202 (nothing to poll); the note is stored once its delay has passed.
- ``see_other``/``found``: the POST is processed (a conditional create may match), answered 303/302 with
  ``Location`` of the result, as some servers answer a conditional create that matched.
- ``temporary_redirect``/``permanent_redirect``: 307/308 to ``DocumentReference?_moved=1`` (on
  ``create_redirect_origin`` when set), nothing processed; a POST there is processed as ``direct``.

A job is stored once the sandbox clock passes its due time, when a search or its status endpoint next looks.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.fhir.access import bearer
from sandbox.fhir.responses import FhirFailure, fhir_response, outcome_body
from sandbox.state import SandboxState, get_state

__all__ = ["accepted_answer", "hashed_etag_answer", "redirect_answer", "router", "settle_async", "wants"]

router = APIRouter()
_REDIRECT = {"see_other": 303, "found": 302, "temporary_redirect": 307, "permanent_redirect": 308}


def settle_async(st: SandboxState) -> None:
    st.async_creates.settle(st.store, st.clock.timestamp())


def wants(st: SandboxState, request: Request, resource_type: str) -> str:
    """The answer this create gets: ``create_answer`` for a type of ``create_answer_types`` not already redirected,
    else direct."""
    if resource_type not in st.settings.create_answer_types or request.query_params.get("_moved"):
        return "direct"
    return st.settings.create_answer


def redirect_answer(st: SandboxState, request: Request, mode: str, location: str | None) -> Response:
    """A 3xx: to the result (``location``, 302/303) or, unprocessed, to the moved create endpoint (307/308)."""
    origin = st.settings.create_redirect_origin
    if location is None:
        location = f"{st.fhir_base(request)}/{request.url.path.rstrip('/').rsplit('/', 1)[-1]}?_moved=1"
    if origin:
        location = origin.rstrip("/") + location[len(st.base(request)) :]
    return Response(status_code=_REDIRECT[mode], headers={"Location": location})


def accepted_answer(st: SandboxState, request: Request, mode: str, body: dict[str, Any]) -> Response:
    """202: the create is a job; ``async`` names its status endpoint, ``accepted`` nothing."""
    cfg = st.settings
    job_id = st.async_creates.submit(body, st.clock.timestamp() + cfg.create_async_delay_s, cfg.create_async_rejects)
    settle_async(st)  # no delay: done at once, still answered 202
    location = f"{st.fhir_base(request)}/_async/{job_id}"
    if cfg.create_redirect_origin:  # a status endpoint on another origin, off the FHIR base
        location = cfg.create_redirect_origin.rstrip("/") + location[len(st.base(request)) :]
    headers = {"Content-Location": location} if mode == "async" else {}
    return fhir_response(outcome_body("informational", "accepted", "information"), 202, headers)


def hashed_etag_answer(r: dict[str, Any], status: int, fhir_base: str) -> Response:
    """``create_hashed_etag``: a server keeping no versions, behind a framework that makes every answer's ETag a hash
    of its body (Rails' Rack::ETag: ``W/"<MD5>"``): a ``Location`` without ``/_history``, the resource without
    ``meta``, and an ETag naming no version."""
    body = orjson.dumps({k: v for k, v in r.items() if k != "meta"})
    digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
    headers = {"Location": f"{fhir_base}/{r['resourceType']}/{r['id']}", "ETag": f'W/"{digest}"'}
    return Response(body, status, headers, media_type="application/fhir+json")


@router.get("/fhir/_async/{job_id}", response_model=None)
def async_status(job_id: str, request: Request) -> Response:
    st = get_state(request)
    bearer(st, request)
    settle_async(st)
    job = st.async_creates.get(job_id)
    mode = st.settings.create_async_status
    if job is None or mode == "lost":
        raise FhirFailure(404, "not-found", "no such async job")
    if mode == "moved" and not request.query_params.get("node"):
        return Response(status_code=307, headers={"Location": f"{st.fhir_base(request)}/_async/{job_id}?node=2"})
    if mode == "gateway":
        return Response(b"<html><body>400 Bad Request</body></html>", 400, media_type="text/html")
    if not job.done:
        working = 200 if mode == "outcome" else 202
        wait = st.settings.create_async_retry_after
        headers = {"Retry-After": wait} if wait else {}
        return fhir_response(outcome_body("informational", "in progress", "information"), working, headers)
    return fhir_response(
        {"resourceType": "Bundle", "type": "batch-response", "entry": [_entry(st, request, job.created)]}
    )


def _entry(st: SandboxState, request: Request, made: dict[str, Any] | None) -> dict[str, Any]:
    """The done job's batch-response entry: its refusal (422), or its 201 naming the resource created, or, with
    ``create_async_status`` ``unnamed``/``collection``, a 201 naming no id (no location, or the type's collection;
    no resource), the resource stored all the same."""
    if made is None:
        answer: dict[str, Any] = {
            "status": "422 Unprocessable Entity",
            "outcome": outcome_body("business-rule", "simulated: the note was refused"),
        }
        return {"response": answer}
    mode = st.settings.create_async_status
    if mode == "unnamed":
        return {"response": {"status": "201 Created"}}
    if mode == "collection":
        return {"response": {"status": "201 Created", "location": f"{st.fhir_base(request)}/{made['resourceType']}"}}
    version = made.get("meta", {}).get("versionId", "1")
    location = f"{made['resourceType']}/{made['id']}/_history/{version}"
    return {"resource": made, "response": {"status": "201 Created", "location": location}}
