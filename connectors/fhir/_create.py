"""Sending a create (``FhirClient.create``): the POST, the redirects it follows under the FHIR base, and the GET of a
302/303's result. What each answer means is :mod:`connectors.fhir.created`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from connectors.errors import CreateRedirectError, EhrSyncError, FhirError, ResponseTooLargeError
from connectors.fhir._answers import json_reader
from connectors.fhir._exact_json import loads_exact
from connectors.fhir._session import FhirSession
from connectors.fhir.created import (
    FHIR_JSON,
    MAX_HOPS,
    REDIRECTS,
    SEE_OTHER,
    CreateResult,
    followed_to,
    result_of,
    status_url,
    unanswered,
)
from connectors.transport.bounds import BodyBounds, read_capped
from connectors.transport.redirects import redirect_target

__all__ = ["send_create"]

# The name FhirClient's create has always logged under: a log filter naming it keeps its records.
logger = logging.getLogger("connectors.fhir.client")


def _created_body(response: httpx.Response, max_bytes: int | None) -> tuple[Any, bool]:
    """The JSON body of a 2xx to a create, or None when it cannot be used (not JSON, e.g. a gateway's HTML page, or
    over the byte limit), and whether any body came. The 2xx is the answer: the server created the resource, and a
    body failing to parse must not make the caller think otherwise (it would create it again, DWB-50); the id then
    comes from ``Location``."""
    try:
        data = read_capped(response, max_bytes)
        return (loads_exact(data) if data else None), bool(data)
    except (ValueError, ResponseTooLargeError) as exc:
        why = exc.code if isinstance(exc, ResponseTooLargeError) else FhirError.code  # as json_body's refusal
        logger.warning("created, but the answer's body is unusable", extra={"status": response.status_code, "why": why})
        return None, True


def send_create(
    session: FhirSession,
    url: str,
    resource: dict[str, Any],
    headers: dict[str, str],
    *,
    base: str,
    bounds: BodyBounds,
    resource_type: str,
    idempotent: bool,
) -> CreateResult:
    """POST ``resource`` to ``url`` (``headers``: :func:`~connectors.fhir.created.create_headers`), following a
    redirect under ``base`` at most ``MAX_HOPS`` times; ``idempotent`` (a conditional create) allows retries."""
    lost = [False]

    def handle(response: httpx.Response) -> CreateResult:
        status = response.status_code
        if status == 202:  # accepted for later: Content-Location is a status endpoint, not the resource
            return CreateResult(202, None, None, None, status_url=status_url(response))
        if status in REDIRECTS:  # where it leads; followed (or refused) below
            lost[0] = lost[0] or unanswered(response)  # a hop's lost answer: the next hop's error says nothing
            location = response.headers.get("Location")
            target = redirect_target(location, response.request, status) if location else None
            return CreateResult(status, None, target, None)
        body, said = _created_body(response, bounds.max_bytes)
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        # the ETag only of an answer without a body: with one, a framework may have made it a hash of that body
        # (Rack::ETag), no version; a body that is the resource says its version itself
        etag = None if said else response.headers.get("ETag")
        return result_of(status, location, body, resource_type, etag)

    try:
        for _ in range(MAX_HOPS + 1):
            result = _post(session, url, headers, orjson.dumps(resource), idempotent, handle, bounds)
            if result.status not in REDIRECTS:
                break
            url = followed_to(result, base, resource_type)
            if result.status in SEE_OTHER:
                result = _see_other(session, url, result.status, resource_type, bounds)
                break
        else:
            raise CreateRedirectError(f"create {resource_type}: more than {MAX_HOPS} redirects", result.status)
    except EhrSyncError as exc:  # an earlier hop's try may be stored (EhrSyncError.after_lost_answer)
        exc.after_lost_answer = exc.after_lost_answer or lost[0]
        raise
    logger.info("created", extra={"resource_type": resource_type, "id": result.id, "status": result.status})
    return result


def _post(
    session: FhirSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    idempotent: bool,
    handle: Callable[..., CreateResult],
    bounds: BodyBounds,
) -> CreateResult:
    """One POST of a create; a redirect whose Location cannot be requested is a ``CreateRedirectError`` (its
    status says whether the POST was processed), never a plain FhirError that would read as a refusal."""
    try:
        return session.request(
            "POST",
            url,
            headers=headers,
            content=body,
            idempotent=idempotent,
            passthrough=lambda response: response.status_code in REDIRECTS,
            handler=handle,
            bounds=bounds,
        )
    except FhirError as exc:
        if exc.status not in REDIRECTS or isinstance(exc, CreateRedirectError):
            raise
        raise CreateRedirectError(f"create: {exc}", exc.status) from exc


def _see_other(session: FhirSession, url: str, status: int, resource_type: str, bounds: BodyBounds) -> CreateResult:
    """GET the result a 302/303 points at: the POST was processed, this shows what it made or matched."""
    try:
        body = session.request(
            "GET",
            url,
            headers={"Accept": FHIR_JSON},
            handler=json_reader(bounds.max_bytes),
            bounds=bounds,
        )
    except EhrSyncError as exc:
        raise CreateRedirectError(
            f"create {resource_type} answered HTTP {status}; reading its result failed ({exc.code})", status
        ) from exc
    result = result_of(status, url, body, resource_type)
    if result.resource is None:
        raise CreateRedirectError(f"create {resource_type} answered HTTP {status} to no {resource_type}", status)
    return result
