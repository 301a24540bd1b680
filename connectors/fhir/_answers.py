"""Reading an EHR's answer: its JSON body within the byte limit, its OperationOutcome, the diagnostics for the error
message and the typed FhirError. Whether to retry it is the transport's rule (:mod:`connectors.transport.answers`),
re-exported here."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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
from connectors.http.echoes import request_credentials, without_secrets
from connectors.transport.answers import CONTROL_CHARS, issue_codes, operation_outcome_of, quota_reset_s, retry_kind
from connectors.transport.bounds import read_capped

__all__ = [
    "CONTROL_CHARS",
    "DIAGNOSTICS_MAX_CHARS",
    "error_from_response",
    "json_body",
    "json_reader",
    "operation_outcome_of",
    "outcome_diagnostics",
    "retry_kind",
    "unauthorized",
]

DIAGNOSTICS_MAX_CHARS = 300


def outcome_diagnostics(
    outcome: Mapping[str, Any] | None, limit: int = DIAGNOSTICS_MAX_CHARS, *, sent: list[str] | None = None
) -> str | None:
    """The issues' ``diagnostics`` (or ``details.text``) as one line: control characters stripped, ``sent`` (the
    request's credentials) replaced by ``[REDACTED]`` before it is capped.

    Servers may echo request values here, so this goes into exception messages (shown to the operator who
    owns the data) but the connectors never log it. A server quoting the request's headers quotes its access
    token too, and an exception message is kept (a run's failure): never with the token.
    """
    texts: list[str] = []
    for issue in (outcome or {}).get("issue", []):
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = issue.get("diagnostics")
        if not isinstance(text, str) and isinstance(details, dict):
            text = details.get("text")
        if isinstance(text, str):
            cleaned = " ".join(CONTROL_CHARS.sub(" ", without_secrets(text, sent or []) or "").split())
            if cleaned and cleaned not in texts:
                texts.append(cleaned)
    if not texts:
        return None
    joined = "; ".join(texts)
    return joined if len(joined) <= limit else joined[: limit - 1].rstrip() + "\u2026"


def error_from_response(method: str, url: str, response: httpx.Response, *, token_withheld: bool = False) -> FhirError:
    """The typed error for a failed answer; ``token_withheld``: the request went without the token on purpose, so
    a 401 is the host's own refusal (FhirWithoutTokenRefusedError), not the OAuth client's."""
    outcome = operation_outcome_of(response)
    status = response.status_code
    codes = issue_codes(outcome)
    detail = f" (issues: {', '.join(codes)})" if codes else ""
    diagnostics = outcome_diagnostics(outcome, sent=request_credentials(response))
    said = f": {diagnostics}" if diagnostics else ""
    withheld = status == 401 and token_withheld
    note = " to a request sent without the access token (not required there, or a redirect left the FHIR server)"
    message = f"{method} {redact_url(url)} answered HTTP {status}{note if withheld else ''}{detail}{said}"
    retry_after_header = response.headers.get("Retry-After")
    error: FhirError
    if withheld:
        error = FhirWithoutTokenRefusedError(message, status, outcome, redact_url(url))
    elif status == 429 or (status == 503 and retry_after_header is not None):
        error = RateLimitedError(message, status, outcome, redact_url(url), _retry_after(response))
    else:
        error = fhir_error_for_status(status)(message, status, outcome, redact_url(url))
    error.diagnostics = diagnostics
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
