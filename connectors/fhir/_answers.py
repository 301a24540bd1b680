"""Reading an EHR's answer: its OperationOutcome, the diagnostics for the error message, the typed FhirError,
and whether to retry it (one rule, :func:`connectors.errors.is_transient_answer`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from connectors.errors import (
    FhirError,
    FhirUnauthorizedError,
    RateLimitedError,
    fhir_error_for_status,
    is_transient_answer,
)
from connectors.http import parse_retry_after, redact_url

__all__ = [
    "CONTROL_CHARS",
    "DIAGNOSTICS_MAX_CHARS",
    "error_from_response",
    "operation_outcome_of",
    "outcome_diagnostics",
    "retry_kind",
    "unauthorized",
]

DIAGNOSTICS_MAX_CHARS = 300
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")


def operation_outcome_of(response: httpx.Response) -> dict[str, Any] | None:
    """The OperationOutcome in a (read) response body, or None (empty bodies happen, e.g. Epic 403s)."""
    if not response.content:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return body
    return None


def outcome_diagnostics(outcome: Mapping[str, Any] | None, limit: int = DIAGNOSTICS_MAX_CHARS) -> str | None:
    """The issues' ``diagnostics`` (or ``details.text``) as one line: control characters stripped, capped.

    Servers may echo request values here, so this goes into exception messages (shown to the operator who
    owns the data) but the connectors never log it.
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
            cleaned = " ".join(CONTROL_CHARS.sub(" ", text).split())
            if cleaned and cleaned not in texts:
                texts.append(cleaned)
    if not texts:
        return None
    joined = "; ".join(texts)
    return joined if len(joined) <= limit else joined[: limit - 1].rstrip() + "\u2026"


def _issue_codes(outcome: Mapping[str, Any] | None) -> list[str]:
    return [str(i.get("code")) for i in (outcome or {}).get("issue", []) if isinstance(i, dict)]


def error_from_response(method: str, url: str, response: httpx.Response) -> FhirError:
    outcome = operation_outcome_of(response)
    status = response.status_code
    codes = _issue_codes(outcome)
    detail = f" (issues: {', '.join(codes)})" if codes else ""
    diagnostics = outcome_diagnostics(outcome)
    said = f": {diagnostics}" if diagnostics else ""
    message = f"{method} {redact_url(url)} answered HTTP {status}{detail}{said}"
    retry_after_header = response.headers.get("Retry-After")
    error: FhirError
    if status == 429 or (status == 503 and retry_after_header is not None):
        error = RateLimitedError(message, status, outcome, redact_url(url), parse_retry_after(retry_after_header))
    else:
        error = fhir_error_for_status(status)(message, status, outcome, redact_url(url))
    error.diagnostics = diagnostics
    return error


def retry_kind(response: httpx.Response, idempotent: bool) -> str | None:
    """``throttle`` (wait per Retry-After), ``transient`` (backoff) or None (fail now).

    Which answers are transient is decided once, by :func:`connectors.errors.is_transient_answer`, the same
    test as ``FhirError.is_transient``.
    """
    status = response.status_code
    if status in (429, 503):
        return "throttle"
    if not idempotent:
        return None
    if is_transient_answer(status, _issue_codes(operation_outcome_of(response))):
        return "transient"
    return None


def unauthorized(method: str, url: str, response: httpx.Response) -> FhirUnauthorizedError:
    return FhirUnauthorizedError(
        f"{method} {redact_url(url)} answered HTTP 401 again after a token refresh",
        401,
        operation_outcome_of(response),
        redact_url(url),
    )
