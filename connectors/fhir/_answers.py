"""Reading an EHR's answer: its JSON body within the byte limit, its OperationOutcome and the typed FhirError, whose
message says of the outcome only what :func:`connectors.transport.issues.issue_summary` keeps (never the
diagnostics). Whether to retry it is the transport's rule (:mod:`connectors.transport.answers`), re-exported here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from connectors.errors import (
    FhirError,
    FhirUnauthorizedError,
    FhirWithoutTokenRefusedError,
    RateLimitedError,
    fhir_error_for_status,
)
from connectors.fhir._exact_json import loads_exact
from connectors.http import parse_retry_after, redact_url
from connectors.transport.answers import CONTROL_CHARS, operation_outcome_of, quota_reset_s, retry_kind
from connectors.transport.bounds import read_capped
from connectors.transport.issues import issue_summary

__all__ = [
    "CONTROL_CHARS",
    "error_from_response",
    "json_body",
    "json_reader",
    "operation_outcome_of",
    "retry_kind",
    "unauthorized",
]


def error_from_response(method: str, url: str, response: httpx.Response, *, token_withheld: bool = False) -> FhirError:
    """The typed error for a failed answer; ``token_withheld``: the request went without the token on purpose, so
    a 401 is the host's own refusal (FhirWithoutTokenRefusedError), not the OAuth client's."""
    outcome = operation_outcome_of(response)
    status = response.status_code
    issues = issue_summary(outcome)
    detail = f" (issues: {issues})" if issues else ""
    withheld = status == 401 and token_withheld
    note = " to a request sent without the access token (not required there, or a redirect left the FHIR server)"
    message = f"{method} {redact_url(url)} answered HTTP {status}{note if withheld else ''}{detail}"
    retry_after_header = response.headers.get("Retry-After")
    error: FhirError
    if withheld:
        error = FhirWithoutTokenRefusedError(message, status, outcome, redact_url(url))
    elif status == 429 or (status == 503 and retry_after_header is not None):
        error = RateLimitedError(message, status, outcome, redact_url(url), _retry_after(response))
    else:
        error = fhir_error_for_status(status)(message, status, outcome, redact_url(url))
    return error


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a throttle answer says to wait: its Retry-After, or a 429's spent quota's reset, the longer."""
    asked = parse_retry_after(response.headers.get("Retry-After"))
    reset = quota_reset_s(response, time.time())
    return asked if reset is None else reset if asked is None else max(asked, reset)


def unauthorized(method: str, url: str, response: httpx.Response) -> FhirUnauthorizedError:
    return FhirUnauthorizedError(
        f"{method} {redact_url(url)} answered HTTP 401 again after a token refresh",
        401,
        operation_outcome_of(response),
        redact_url(url),
    )


def json_reader(max_bytes: int | None) -> Callable[[httpx.Response], Any]:
    """A handler parsing the body as JSON, refusing more than ``max_bytes`` decoded bytes."""
    return lambda response: json_body(response, max_bytes)


def json_body(response: httpx.Response, max_bytes: int | None = None) -> Any:
    data = read_capped(response, max_bytes)
    if not data:
        return None
    try:
        return loads_exact(data)
    except orjson.JSONDecodeError as exc:
        url = redact_url(str(response.url))
        raise FhirError(f"{url} returned a body that is not JSON", response.status_code, None, url) from exc
