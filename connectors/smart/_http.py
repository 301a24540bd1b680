"""Shared HTTP plumbing for the SMART/OAuth endpoints: sends through the EHR transport layers
(:func:`connectors.transport.ehr_client`, so token calls spend from the vendor's rate budget like FHIR calls),
form POSTs, JSON GETs and error mapping (SAL-36).

Every body is read here, bounded as FHIR bodies are: decoded a piece at a time and counted against
``EHRSYNC_MAX_RESPONSE_BYTES``, within ``EHRSYNC_REQUEST_DEADLINE_S`` overall (the values the caller's
:class:`~connectors.transport.BoundedClient` carries, else the environment's), and an error answer cut at 1 MiB.
Without it a discovery document, JWKS or token answer was read whole, inflated by httpx a chunk at a time, for
as long as the server kept sending."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson

from connectors.budgets import check_step_budget
from connectors.errors import (
    MALFORMED_ERROR,
    OAuthError,
    RequestDeadlineError,
    ResponseTooLargeError,
    TemporarilyUnavailableError,
    TransportError,
    UnsupportedContentEncodingError,
    oauth_error_from_response,
)
from connectors.http.dates import parse_retry_after
from connectors.http.echoes import authorization_secrets, without_secrets
from connectors.http.urls import redact_url
from connectors.transport import DEFAULT_TIMEOUT, bounds_of, ehr_client, read_capped
from connectors.transport.answers import json_object_text, json_text
from connectors.transport.decoding import ACCEPT_ENCODING, with_body
from connectors.transport.plan import APP_EXTENSION, app_key
from connectors.transport.redirects import locations_unread

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMEOUT",
    "get",
    "parse_json_body",
    "post_form",
    "raise_for_oauth_error",
    "require_json_object",
    "retry_after_of",
    "send",
    "unavailable",
]


def parse_json_body(response: httpx.Response) -> Any:
    """Parse a body as JSON whatever its ``Content-Type`` says, past a leading BOM (``json_text``); ``None`` when it
    is not a JSON object (every SMART and OAuth document is one; ``json_object_text``)."""
    if not json_object_text(response.content):
        return None
    try:
        return orjson.loads(json_text(response.content))
    except orjson.JSONDecodeError:
        return None


def send(http: httpx.Client, request: httpx.Request, doing: str) -> httpx.Response:
    """Send ``request`` (built by ``http``) through the EHR layers and read its body, bounded (module docstring);
    the answer holds the decoded body. Network failures become ``TransportError`` naming what was being done
    (``calling <url>``), never a body: bodies carry codes, secrets and assertions. A body over the byte limit is
    ``ResponseTooLargeError``; an answer still arriving, or not yet begun, at the deadline ``RequestDeadlineError``
    (a ``TransportError`` the vault does not retry).
    A step whose budget is spent (``connectors.budgets.step_budget``) sends nothing; one that runs out while the
    answer arrives still gets it. A 3xx (httpx follows none by default) is the caller's to handle as any answer not
    a 2xx, whether or not httpx can parse its Location (``locations_unread``)."""
    bounds = dataclasses.replace(bounds_of(http), within_step=False)
    check_step_budget()  # a spent step sends nothing: a grant, once sent, may rotate the refresh token
    request.extensions.update(bounds.extensions())  # the attempt layer bounds the body and cuts error answers
    try:
        with locations_unread():
            response = ehr_client(http).send(request, stream=True)
        try:
            if response.status_code >= 400:  # already read, cut at 1 MiB
                return response
            return with_body(response, read_capped(response, bounds.max_bytes))
        finally:
            response.close()
    except httpx.TimeoutException as exc:  # waits are cut to the deadline: past it, this is the deadline
        if bounds.attempt_overran(request):
            raise RequestDeadlineError(
                f"{request.method} {redact_url(str(request.url))} got no complete answer within "
                f"{bounds.deadline_s:g} s (EHRSYNC_REQUEST_DEADLINE_S)"
            ) from exc
        raise TransportError(f"timeout {doing}") from exc
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise TransportError(f"transport failure {doing}: {type(exc).__name__}") from exc


def get(http: httpx.Client, url: str, accept: str, doing: str | None = None) -> httpx.Response:
    """GET ``url`` asking for ``accept``; ``doing`` names it in errors (default ``fetching <url>``)."""
    request = http.build_request("GET", url, headers={"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING})
    return send(http, request, doing or f"fetching {redact_url(url)}")


def post_form(
    http: httpx.Client,
    url: str,
    data: Mapping[str, str],
    *,
    headers: Mapping[str, str] | None = None,
    client_id: str | None = None,
) -> httpx.Response:
    """POST ``application/x-www-form-urlencoded``; network failures become ``TransportError``. ``client_id``: the
    OAuth client it authenticates as (the EHR's quota holds are kept per app).

    Like every EHR call it spends from the active rate budget (vendors such as eCW count token calls in the
    same budget as FHIR calls) and is sent once: the vault retries whole grants (a refresh token may rotate).
    """
    all_headers = {"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
    request = http.build_request("POST", url, data=dict(data), headers=all_headers)
    if client_id:
        request.extensions[APP_EXTENSION] = app_key(client_id)
    try:
        return send(http, request, f"calling {redact_url(url)}")
    except (ResponseTooLargeError, UnsupportedContentEncodingError) as exc:  # an answer no client can use
        raise OAuthError("invalid_response", str(exc)) from exc


def is_outage(status: int) -> bool:
    """A 5xx, 408 or 429: the server failing, timing out or throttling (transient), never its considered answer."""
    return status >= 500 or status in (408, 429)


def retry_after_of(response: httpx.Response) -> float | None:
    """The seconds a 429 or 503 answer's ``Retry-After`` says to wait (seconds or an HTTP-date, parsed by the
    transport's own parser), None when it is another status or carries no usable value."""
    if response.status_code not in (429, 503):
        return None
    return parse_retry_after(response.headers.get("Retry-After"))


def unavailable(response: httpx.Response, message: str) -> TransportError:
    """A 5xx or 429 from a SMART document endpoint (discovery, JWKS): transient, the EHR's ``Retry-After`` kept."""
    error = TransportError(message)
    error.retry_after = retry_after_of(response)
    return error


def raise_for_oauth_error(response: httpx.Response, what: str) -> None:
    """Map a non-2xx OAuth answer to the typed error (SAL-36); 5xx, 408 and 429, whatever their body says (a gateway's
    throttle may carry ``invalid_grant`` or a code of its own), → ``TemporarilyUnavailableError``: the server failing
    or throttling, never a refusal of the client, its refresh token or its request. A 429 or 503 keeps the EHR's
    ``Retry-After`` on the error (``retry_after``)."""
    if response.is_success:
        return
    error = _oauth_error(response, what)
    error.retry_after = retry_after_of(response)
    raise error


#: Form fields of a token, revocation or introspection request that carry a credential or a grant.
_SECRET_FIELDS = ("code", "code_verifier", "refresh_token", "client_secret", "client_assertion", "token", "assertion")


def sent_secrets(request: httpx.Request) -> list[str]:
    """The credentials ``request`` carried: its secret form fields and its ``Authorization`` (whole, and a Basic
    one's decoded secret). An error answer may repeat any of them (a token endpoint's ``invalid_grant`` quoting the
    refresh token or code, a gateway's page echoing the headers)."""
    form = parse_qs(request.content.decode("utf-8", "replace")) if request.content else {}
    found = [v for name in _SECRET_FIELDS for v in form.get(name, [])]
    return found + authorization_secrets(request.headers.get("authorization", ""))


#: RFC 6749 §5.2: ``error`` is NQSCHAR (printable ASCII but ``"`` and ``\``; registered codes are short), ``error_uri``
#: a URI-reference of ``%x21 / %x23-5B / %x5D-7E`` (no space). Bounds: the longest code seen is far under 64.
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]{1,64}")
_ERROR_URI = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,512}")


def _shaped(value: object, pattern: re.Pattern[str], secrets: list[str]) -> str | None:
    """``value`` when it is a string of ``pattern`` holding none of ``secrets``; else None (an echo, not a code)."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        return None
    return value if without_secrets(value, secrets) == value else None


def _safe_error_body(payload: Mapping[str, Any], request: httpx.Request) -> dict[str, Any]:
    """The error body's three fields as they may be kept (a server may echo the request in any of them): ``error``
    and ``error_uri`` only RFC 6749 shaped and without a credential of the request (else ``MALFORMED_ERROR`` and
    none), ``error_description`` a string with those credentials redacted (anything else: none). No other field
    is kept."""
    secrets = sent_secrets(request)
    description = payload.get("error_description")
    return {
        "error": _shaped(payload.get("error"), _ERROR_CODE, secrets) or MALFORMED_ERROR,
        "error_description": without_secrets(description, secrets) if isinstance(description, str) else None,
        "error_uri": _shaped(payload.get("error_uri"), _ERROR_URI, secrets),
    }


def _oauth_error(response: httpx.Response, what: str) -> OAuthError:
    payload = parse_json_body(response)
    status = response.status_code
    failing = is_outage(status)
    if isinstance(payload, dict) and payload.get("error"):
        error = oauth_error_from_response(_safe_error_body(payload, response.request), status)
        if failing and not isinstance(error, TemporarilyUnavailableError):
            return TemporarilyUnavailableError(
                "temporarily_unavailable",
                f"{what}: HTTP {status} ({error.error})",
                error.error_uri,
                status,
            )
        return error
    if failing:
        return TemporarilyUnavailableError("temporarily_unavailable", f"{what}: HTTP {status}", None, status)
    return OAuthError("invalid_response", f"{what}: HTTP {status} without an OAuth error body", None, status)


def require_json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The success body as a JSON object, or an ``OAuthError`` naming the endpoint."""
    payload = parse_json_body(response)
    if not isinstance(payload, dict):
        raise OAuthError("invalid_response", f"{what}: response is not a JSON object", None, response.status_code)
    return payload
