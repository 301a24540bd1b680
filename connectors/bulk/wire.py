"""Wire details of Bulk Data requests and responses: instants, the Parameters body, status classification."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from connectors.bulk.manifest import MAX_MANIFEST_FILES, BulkManifest, page_objects_over_limit, parse_manifest
from connectors.errors import (
    TRANSIENT_ISSUE_CODES,
    BulkExportBusyError,
    BulkExportError,
    CallBudgetBusyError,
    FhirError,
    QuotaExhaustedError,
    RateLimitedError,
    is_transient_answer,
)
from connectors.fhir._session import operation_outcome_of
from connectors.fhir.resource_types import ID_RE
from connectors.http import parse_http_date, parse_retry_after, redact_url, resolve_checked_url
from connectors.transport.answers import issues_of, json_object_text, json_text
from connectors.transport.bounds import read_capped
from connectors.transport.issues import issue_summary

__all__ = [
    "BulkStatus",
    "as_bulk_error",
    "classify_status",
    "failed_response",
    "fhir_instant",
    "kickoff_error",
    "parameters_body",
    "read_bounded",
    "status_url_of",
]


@dataclass(frozen=True)
class BulkStatus:
    """One status poll. ``throttled`` = 429 (poll slower); ``transient`` = hiccup, job alive (back off)."""

    done: bool
    progress: str | None = None
    retry_after: float | None = None
    manifest: BulkManifest | None = None
    expires: datetime | None = None
    throttled: bool = False
    transient: bool = False
    #: why a ``transient`` answer is one, when the status alone does not say (a 200 that is no manifest at all)
    note: str | None = None


#: A 200 whose body is not a JSON object: far likelier a proxy's or gateway's own page served 200, or a body cut in
#: transit, than the server's considered manifest, so the job is polled again, never cancelled for it.
UNREADABLE_200 = (
    "the status URL answered 200 with a body that is not a JSON object (a proxy's or gateway's page, or a body cut "
    "short), not a manifest"
)


def fhir_instant(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("_since must be timezone-aware (a FHIR instant needs a zone)")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def failed_response(what: str, response: httpx.Response) -> BulkExportError:
    outcome = operation_outcome_of(response)
    issues = issue_summary(outcome)  # never the diagnostics: the message is logged and kept as the run's error
    detail = f" (issues: {issues})" if issues else ""
    url = redact_url(str(response.url))
    return BulkExportError(
        f"{what} {url} answered HTTP {response.status_code}{detail}",
        status=response.status_code,
        operation_outcome=outcome,
        url=url,
    )


def status_url_of(response: httpx.Response) -> str:
    """The kick-off's absolute status URL (202 + Content-Location, BDX-06), else BulkExportError: a Content-Location
    urllib cannot split (a bad port, an unclosed ``[``) is named here, not a bare ValueError at the first poll."""
    location = response.headers.get("Content-Location")
    if response.status_code != 202 or not location:
        raise failed_response("kick-off without a status URL (needs 202 + Content-Location):", response)
    what = "bulk kick-off Content-Location"
    return resolve_checked_url(location, str(response.url), what, lambda m: BulkExportError(m, status=202))


def as_bulk_error(what: str, exc: FhirError) -> BulkExportError:
    """Re-type a FHIR error from a bulk endpoint, keeping status and OperationOutcome."""
    return BulkExportError(
        f"{what}: {exc.message}",
        status=exc.status,
        operation_outcome=exc.operation_outcome,
        url=exc.url,
    )


def kickoff_error(exc: FhirError) -> BulkExportError:
    """The kick-off's error; a throttle still answered once the retry policy's attempts are spent (BDX-07: a 429, as a
    server limiting concurrent exports per client answers a second one) is a BulkExportBusyError keeping the wait
    the server asked for, so the engine can note when to come back."""
    if not isinstance(exc, RateLimitedError):
        return as_bulk_error("bulk kick-off failed", exc)
    return BulkExportBusyError(
        f"bulk kick-off throttled, no export was started ({_throttle_named(exc)}): {exc.message}",
        retry_after=exc.retry_after,
        status=exc.status,
        operation_outcome=exc.operation_outcome,
        url=exc.url,
    )


def _throttle_named(exc: RateLimitedError) -> str:
    """What throttled the kick-off, by the status really answered (a 503 with Retry-After is a throttle too), or that
    nothing was sent (a spent quota, the call budget, or any other throttle met before it, e.g. the token endpoint's:
    only a plain RateLimitedError is the kick-off's own answer): the message names no status the server never gave."""
    if isinstance(exc, QuotaExhaustedError | CallBudgetBusyError):
        return "not sent: no call was left to make"
    if type(exc) is not RateLimitedError:
        return f"not sent: {exc.code}"
    answered = f"{exc.status} with Retry-After" if exc.status == 503 else str(exc.status)
    return (
        f"the EHR answered {answered}, as an EHR does to an export beyond its limit of concurrent exports per client, "
        "e.g. while another is running, or while it is overloaded"
    )


def _reports_failure(issues: list[Mapping[str, Any]]) -> bool:
    """The OperationOutcome has ``error``/``fatal`` issues and none of them says the failure is transient."""
    failing = [i for i in issues if i.get("severity") in ("error", "fatal")]
    return bool(failing) and not any(i.get("code") in TRANSIENT_ISSUE_CODES for i in failing)


def classify_status(response: httpx.Response, now: datetime, max_files: int = MAX_MANIFEST_FILES) -> BulkStatus:
    """Map a (read) status response to the BDX-09 table; a failed job raises BulkExportError, and so does a JSON
    object that is no valid manifest, or one of more than ``max_files`` files (an invalid one; one holding more JSON
    objects than those files could is refused before it is decoded: ``manifest.page_objects_over_limit``). A 200 that
    is not a JSON object at all is ``transient`` (:data:`UNREADABLE_200`); a leading UTF-8 BOM (a .NET writer's
    default) is no part of the JSON, not a sign of that."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
    if status == 200:
        if (too_many := page_objects_over_limit(response.content, max_files)) is not None:  # before decoding it
            raise too_many
        try:  # a body that does not begin as an object (a JSON array, a gateway's page) is never decoded
            body = orjson.loads(json_text(response.content)) if json_object_text(response.content) else None
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return BulkStatus(False, retry_after=retry_after, transient=True, note=UNREADABLE_200)
        manifest = parse_manifest(body, max_files=max_files, base_url=str(response.url))
        return BulkStatus(True, manifest=manifest, expires=parse_http_date(response.headers.get("Expires")))
    if status == 202:
        progress = response.headers.get("X-Progress")
        return BulkStatus(False, progress=progress[:100] if progress else None, retry_after=retry_after)
    if status == 429 or (status == 503 and "Retry-After" in response.headers):
        return BulkStatus(False, retry_after=retry_after, throttled=True)
    issues = issues_of(operation_outcome_of(response))
    codes = [str(i.get("code")) for i in issues]
    # One rule for transient answers (connectors.errors): a proxy's bare 502/503/504/408 is a hiccup, the job
    # is alive. A 500 whose OperationOutcome reports non-transient error/fatal issues is the server saying the
    # job failed (BDX-09).
    server_says_failed = status == 500 and _reports_failure(issues)
    if status >= 400 and is_transient_answer(status, codes) and not server_says_failed:
        return BulkStatus(False, retry_after=retry_after, transient=True)
    raise failed_response("bulk export failed: status", response)


def parameters_body(params: list[tuple[str, str]], patients: Sequence[str]) -> bytes:
    """A FHIR ``Parameters`` body for POST kick-off (BDX-04)."""
    parameter: list[dict[str, Any]] = []
    for name, value in params:
        key = "valueInstant" if name == "_since" else "valueString"
        parameter.append({"name": name, key: value})
    for ref in patients:
        if not isinstance(ref, str) or not ref.startswith("Patient/") or not ID_RE.match(ref[len("Patient/") :]):
            raise ValueError("patient references must look like 'Patient/<id>'")
        parameter.append({"name": "patient", "valueReference": {"reference": ref}})
    return orjson.dumps({"resourceType": "Parameters", "parameter": parameter})


def read_bounded(response: httpx.Response, max_bytes: int | None) -> httpx.Response:
    """``response`` with its body read under the JSON byte limit (decoded bytes: a small gzip body may expand;
    ResponseTooLargeError past it), as a plain in-memory response the helpers above can read again."""
    body = read_capped(response, max_bytes)
    skip = ("content-encoding", "content-length", "transfer-encoding")
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip]
    return httpx.Response(response.status_code, headers=headers, content=body, request=response.request)
