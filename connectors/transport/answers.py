"""Which EHR answers are worth another attempt: a throttle (wait per Retry-After) or a transient failure
(back off). One rule, :func:`connectors.errors.is_transient_answer`, the same test as ``FhirError.is_transient``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import orjson

from connectors.errors import is_transient_answer
from connectors.http.echoes import authorization_secrets, json_without_secrets
from connectors.http.quota import read_quota
from connectors.ndjson_files import UTF8_BOM

__all__ = [
    "CONTROL_CHARS",
    "RetryKind",
    "issue_codes",
    "issues_of",
    "json_object_text",
    "json_text",
    "operation_outcome_of",
    "outcome_without_credentials",
    "quota_reset_s",
    "retry_kind",
]

RetryKind = Literal["throttle", "transient"]
_JSON_OBJECT_START = re.compile(rb"\s*\{")
#: Characters stripped from server-sent text before it goes into a message (no terminal or bidi tricks).
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")


def json_text(body: bytes) -> bytes:
    """``body`` past a leading UTF-8 byte order mark: the JSON text every reader of an EHR's answer parses. RFC 8259
    §8.1 lets a parser ignore one, and .NET-based FHIR servers and gateways write one first; orjson refuses it ("BOM
    is not supported"), so without this a whole valid answer read as no JSON at all."""
    return body.removeprefix(UTF8_BOM)


def json_object_text(body: bytes) -> bool:
    """Whether ``body`` may be a JSON object (its first non-space byte, past a BOM, is ``{``): an empty body or a
    proxy's HTML page is never handed to orjson, whose parser reserves ~12x its input."""
    return _JSON_OBJECT_START.match(json_text(body)) is not None


def operation_outcome_of(response: httpx.Response) -> dict[str, Any] | None:
    """The OperationOutcome in a (read) response body, or None (empty bodies happen, e.g. Epic 403s); without the
    request's own credentials (``outcome_without_credentials``)."""
    if not json_object_text(response.content):
        return None
    try:
        body = orjson.loads(json_text(response.content))
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return outcome_without_credentials(body, response)
    return None


def issues_of(outcome: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The OperationOutcome's issues that are objects: none when ``issue`` is missing, null or not a list (a server's
    malformed answer is still a typed error, never a TypeError)."""
    issues = (outcome or {}).get("issue")
    return [i for i in issues if isinstance(i, Mapping)] if isinstance(issues, list) else []


def outcome_without_credentials(outcome: dict[str, Any], response: httpx.Response) -> dict[str, Any]:
    """``outcome`` with the credential of the request ``response`` answers (its ``Authorization``: the bearer token,
    a Basic secret) replaced by ``[REDACTED]`` in every string, in any encoding (``connectors.http.echoes``). Servers
    quote the refused request in ``diagnostics``, headers included, and a refused note keeps them (its outbox row):
    the token never reaches that row, nor any code holding the error's ``operation_outcome``."""
    try:
        request = response.request
    except RuntimeError:  # a response built without its request (tests): no credential to look for
        return outcome
    secrets = authorization_secrets(request.headers.get("authorization", ""))
    cleaned: dict[str, Any] = json_without_secrets(outcome, secrets) if secrets else outcome
    return cleaned


def issue_codes(outcome: Mapping[str, Any] | None) -> list[str]:
    """The ``code`` of every issue of an OperationOutcome (none without one)."""
    return [str(i.get("code")) for i in issues_of(outcome)]


def retry_kind(response: httpx.Response, idempotent: bool) -> RetryKind | None:
    """``throttle`` (429, or 503 with ``Retry-After``: wait per Retry-After, even for a POST: the server did not
    act), ``transient`` (backoff, idempotent requests only) or None (fail now). A 503 without ``Retry-After`` is
    a throttle only for idempotent requests: it is also what a gateway answers after giving up on a server that
    went on to do the work, so a POST is not repeated on it (draft-note §5; ``RateLimitedError`` draws the same
    line). Reads the body: call it on error answers only."""
    status = response.status_code
    if status == 429 or (status == 503 and (idempotent or "Retry-After" in response.headers)):
        return "throttle"
    if not idempotent:
        return None
    if is_transient_answer(status, issue_codes(operation_outcome_of(response))):
        return "transient"
    return None


def quota_reset_s(response: httpx.Response, now_epoch: float) -> float | None:
    """For a 429, the seconds until the calls its quota headers say are spent come back (None: they say none is
    spent, or give no reset): how long the server itself says this request would be refused."""
    if response.status_code != 429:
        return None
    quota = read_quota(response.headers, now_epoch)
    return quota.reset_s if quota is not None and quota.spent else None
