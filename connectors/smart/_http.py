"""Shared HTTP plumbing for the OAuth endpoints: form POSTs and error mapping (SAL-36)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from connectors.budgets import spend_rate_budget
from connectors.errors import (
    OAuthError,
    TemporarilyUnavailableError,
    TransportError,
    oauth_error_from_response,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def parse_json_body(response: httpx.Response) -> Any:
    """Parse a body as JSON whatever its ``Content-Type`` says; ``None`` when it is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def post_form(
    http: httpx.Client,
    url: str,
    data: Mapping[str, str],
    *,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST ``application/x-www-form-urlencoded``; network failures become ``TransportError``.

    The body carries codes, secrets and assertions, so nothing about it is logged or put in a message. The call
    spends from the active rate budget (:func:`connectors.budgets.rate_budget`), like the FHIR calls around it.
    """
    all_headers = {"Accept": "application/json", **(headers or {})}
    spend_rate_budget()  # vendors such as eCW count token calls in the same budget as FHIR calls
    try:
        return http.post(url, data=dict(data), headers=all_headers)
    except httpx.TimeoutException as exc:
        raise TransportError(f"timeout calling {url}") from exc
    except httpx.TransportError as exc:
        raise TransportError(f"transport failure calling {url}: {type(exc).__name__}") from exc


def raise_for_oauth_error(response: httpx.Response, what: str) -> None:
    """Map a non-2xx OAuth answer to the typed error (SAL-36); 5xx → ``TemporarilyUnavailableError``."""
    if response.is_success:
        return
    payload = parse_json_body(response)
    status = response.status_code
    if isinstance(payload, dict) and payload.get("error"):
        error = oauth_error_from_response(payload, status)
        if status >= 500 and not isinstance(error, TemporarilyUnavailableError):
            raise TemporarilyUnavailableError(
                "temporarily_unavailable",
                f"{what}: HTTP {status} ({error.error})",
                error.error_uri,
                status,
            )
        raise error
    if status >= 500 or status == 429:
        raise TemporarilyUnavailableError("temporarily_unavailable", f"{what}: HTTP {status}", None, status)
    raise OAuthError("invalid_response", f"{what}: HTTP {status} without an OAuth error body", None, status)


def require_json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The success body as a JSON object, or an ``OAuthError`` naming the endpoint."""
    payload = parse_json_body(response)
    if not isinstance(payload, dict):
        raise OAuthError("invalid_response", f"{what}: response is not a JSON object", None, response.status_code)
    return payload
