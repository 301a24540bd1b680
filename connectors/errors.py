"""The one exception hierarchy for everything that talks to an EHR.

Callers catch what they mean (a refused refresh is not a timeout), never a bare ``Exception``.
Every error carries what the server said (OAuth ``error`` fields or the FHIR ``OperationOutcome``)
but never a token, code, secret or any resource content: messages are safe to log, except that a FhirError's
message ends with the server's OperationOutcome diagnostics (sanitized, capped), which may echo request values:
log ``FhirError.safe_message`` instead.

    EhrSyncError
    ├── ConfigurationError            bad local configuration (provider config, keys, URLs)
    ├── DiscoveryError                SMART configuration / CapabilityStatement unusable (SAL-02)
    ├── SecurityPolicyError           issuer not allow-listed, token sent to a foreign host (SAL-06, SAL-40)
    ├── OAuthError                    an OAuth 2.0 error response (SAL-36), one subclass per code
    │   ├── AccessDeniedError, InvalidRequestError, InvalidClientError, InvalidGrantError,
    │   │   InvalidScopeError, UnauthorizedClientError, TemporarilyUnavailableError
    ├── NeedsReauthError              the grant is gone: a person must authorize again (SAL-25)
    ├── TransportError                timeout, dropped connection, DNS: outcome unknown, retryable
    │   ├── EhrUnreachableError       connection refused / DNS failure twice: stop the run, do not retry for minutes
    │   ├── RequestDeadlineError      one request outlived its overall deadline (a trickling server)
    ├── StepBudgetExceededError       a sync step outlived its overall time budget
    ├── ContentTooLargeError          a download exceeded its size cap (nothing was kept)
    │   ├── ResponseTooLargeError     a JSON body exceeded the per-response byte limit
    ├── FhirError                     a FHIR REST error response (status + OperationOutcome)
    │   ├── FhirUnauthorizedError (401), FhirForbiddenError (403), FhirNotFoundError (404),
    │   │   FhirGoneError (410), FhirPreconditionFailedError (412), FhirUnprocessableError (422),
    │   │   RateLimitedError (429), FhirServerError (5xx)
    │   ├── SearchLinkExpiredError    a paging `next` link answered 404/410: restart from the stored mark (BDX-29)
    │   ├── SearchIncompleteError     a searchset stopped early (total > received, no next; or a repeated next)
    ├── BulkExportError               a bulk job failed, expired or produced an invalid manifest/file
    │   ├── BulkFileExpiredError      file 404/410 after expiry: re-run from the same _since (BDX-19)
    └── WriteNotSupportedError        flags, scopes or the CapabilityStatement forbid a write (DWB)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "TRANSIENT_ISSUE_CODES",
    "TRANSIENT_STATUSES",
    "AccessDeniedError",
    "BulkExportError",
    "BulkFileExpiredError",
    "ConfigurationError",
    "ContentTooLargeError",
    "DiscoveryError",
    "EhrSyncError",
    "EhrUnreachableError",
    "FhirError",
    "FhirForbiddenError",
    "FhirGoneError",
    "FhirNotFoundError",
    "FhirPreconditionFailedError",
    "FhirServerError",
    "FhirUnauthorizedError",
    "FhirUnprocessableError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "NeedsReauthError",
    "OAuthError",
    "RateLimitedError",
    "RequestDeadlineError",
    "ResponseTooLargeError",
    "SearchIncompleteError",
    "SearchLinkExpiredError",
    "SecurityPolicyError",
    "StepBudgetExceededError",
    "TemporarilyUnavailableError",
    "TransportError",
    "UnauthorizedClientError",
    "WriteNotSupportedError",
    "fhir_error_for_status",
    "is_transient_answer",
    "oauth_error_from_response",
]


class EhrSyncError(Exception):
    """Base of every ehrsync error; ``code`` is a stable machine-readable name."""

    code: str = "ehrsync_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(EhrSyncError):
    code = "configuration_error"


class DiscoveryError(EhrSyncError):
    code = "discovery_error"


class SecurityPolicyError(EhrSyncError):
    code = "security_policy"


class NeedsReauthError(EhrSyncError):
    """The grant is unusable (refresh refused, revoked): never retry, ask a person to re-authorize."""

    code = "needs_reauth"


class TransportError(EhrSyncError):
    """The request may or may not have reached the server (timeout, reset, refused)."""

    code = "transport_error"


class OAuthError(EhrSyncError):
    """An RFC 6749 error response from an authorization or token endpoint."""

    code = "oauth_error"

    def __init__(
        self,
        error: str,
        error_description: str | None = None,
        error_uri: str | None = None,
        status: int | None = None,
    ) -> None:
        detail = f": {error_description}" if error_description else ""
        super().__init__(f"{error}{detail}")
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status = status


class AccessDeniedError(OAuthError):
    code = "access_denied"


class InvalidRequestError(OAuthError):
    code = "invalid_request"


class InvalidClientError(OAuthError):
    code = "invalid_client"


class InvalidGrantError(OAuthError):
    code = "invalid_grant"


class InvalidScopeError(OAuthError):
    code = "invalid_scope"


class UnauthorizedClientError(OAuthError):
    code = "unauthorized_client"


class TemporarilyUnavailableError(OAuthError):
    code = "temporarily_unavailable"


_OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    cls.code: cls
    for cls in (
        AccessDeniedError,
        InvalidRequestError,
        InvalidClientError,
        InvalidGrantError,
        InvalidScopeError,
        UnauthorizedClientError,
        TemporarilyUnavailableError,
    )
}


def oauth_error_from_response(payload: Mapping[str, Any], status: int | None = None) -> OAuthError:
    """Build the typed error for an OAuth error body (unknown codes become a plain ``OAuthError``)."""
    error = str(payload.get("error") or "server_error")
    cls = _OAUTH_ERRORS.get(error, OAuthError)
    description = payload.get("error_description")
    uri = payload.get("error_uri")
    return cls(
        error,
        str(description) if description is not None else None,
        str(uri) if uri is not None else None,
        status,
    )


class FhirError(EhrSyncError):
    """A FHIR REST error: HTTP status plus the server's OperationOutcome when it sent one."""

    code = "fhir_error"
    #: The OperationOutcome's diagnostics, sanitized and capped (also at the end of the message); may echo
    #: request values, so loggers use ``safe_message`` instead of the message.
    diagnostics: str | None = None

    def __init__(
        self,
        message: str,
        status: int,
        operation_outcome: Mapping[str, Any] | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.operation_outcome = dict(operation_outcome) if operation_outcome else None
        self.url = url

    @property
    def issue_codes(self) -> list[str]:
        """``issue[].code`` values of the OperationOutcome (empty when none was sent)."""
        if not self.operation_outcome:
            return []
        return [str(i.get("code")) for i in self.operation_outcome.get("issue", []) if isinstance(i, dict)]

    @property
    def safe_message(self) -> str:
        """The message without the server's diagnostics: what a log line may carry."""
        if self.diagnostics and self.message.endswith(f": {self.diagnostics}"):
            return self.message[: -len(self.diagnostics) - 2]
        return self.message

    @property
    def is_transient(self) -> bool:
        """True when the server says the failure is temporary (OperationOutcome ``transient``)."""
        return is_transient_answer(self.status, self.issue_codes)


class FhirUnauthorizedError(FhirError):
    code = "fhir_unauthorized"


class FhirForbiddenError(FhirError):
    code = "fhir_forbidden"


class FhirNotFoundError(FhirError):
    code = "fhir_not_found"


class FhirGoneError(FhirError):
    code = "fhir_gone"


class FhirPreconditionFailedError(FhirError):
    code = "fhir_precondition_failed"


class FhirUnprocessableError(FhirError):
    code = "fhir_unprocessable"


class FhirServerError(FhirError):
    code = "fhir_server_error"


class SearchLinkExpiredError(FhirError):
    """A search ``next`` link answered 404/410: restart the search from the stored high-water mark (BDX-29)."""

    code = "search_link_expired"


class ContentTooLargeError(EhrSyncError):
    """A download exceeded its size cap; the partial file was removed."""

    code = "content_too_large"


class RateLimitedError(FhirError):
    """429 (or 503 with ``Retry-After``): ``retry_after`` is seconds to wait, when the server said."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        status: int,
        operation_outcome: Mapping[str, Any] | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status, operation_outcome, url)
        self.retry_after = retry_after


_FHIR_STATUS: dict[int, type[FhirError]] = {
    401: FhirUnauthorizedError,
    403: FhirForbiddenError,
    404: FhirNotFoundError,
    410: FhirGoneError,
    412: FhirPreconditionFailedError,
    422: FhirUnprocessableError,
    429: RateLimitedError,
}


def fhir_error_for_status(status: int) -> type[FhirError]:
    """The FhirError subclass for an HTTP status."""
    if status in _FHIR_STATUS:
        return _FHIR_STATUS[status]
    if status >= 500:
        return FhirServerError
    return FhirError


class BulkExportError(EhrSyncError):
    """A bulk job failed; ``status``/``operation_outcome`` say what the server answered, when it did."""

    code = "bulk_export_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        operation_outcome: Mapping[str, Any] | None = None,
        url: str | None = None,
        diagnostics: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.operation_outcome = dict(operation_outcome) if operation_outcome else None
        self.url = url
        #: The server's OperationOutcome diagnostics when they end the message (as FhirError): kept in the run's
        #: error, never logged (they may echo request values).
        self.diagnostics = diagnostics

    @property
    def safe_message(self) -> str:
        """The message without the server's diagnostics: what a log line may carry."""
        if self.diagnostics and self.message.endswith(f": {self.diagnostics}"):
            return self.message[: -len(self.diagnostics) - 2]
        return self.message


class BulkFileExpiredError(BulkExportError):
    code = "bulk_file_expired"


class WriteNotSupportedError(EhrSyncError):
    """A write was refused before reaching the server; ``reason`` says which gate closed."""

    code = "WRITE_NOT_SUPPORTED"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"write not supported: {reason}")
        self.reason = reason


#: HTTP statuses that mean "try again later" (the one list: the retry policy and ``FhirError.is_transient``).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: OperationOutcome ``issue.code`` values of FHIR's ``transient`` family that make any status retryable.
TRANSIENT_ISSUE_CODES = frozenset({"transient", "throttled", "timeout", "lock-error", "no-store"})


def is_transient_answer(status: int, issue_codes: Iterable[str] = ()) -> bool:
    """Whether an EHR answer is worth retrying: a transient status, or an OperationOutcome saying so."""
    return status in TRANSIENT_STATUSES or any(code in TRANSIENT_ISSUE_CODES for code in issue_codes)


class ResponseTooLargeError(ContentTooLargeError):
    """A JSON body (search page, read, CapabilityStatement) went past the per-response byte limit."""

    code = "response_too_large"


class RequestDeadlineError(TransportError):
    """One request took longer than its overall deadline (e.g. a server trickling bytes): not retried."""

    code = "request_deadline_exceeded"


class StepBudgetExceededError(EhrSyncError):
    """A sync step (one resource type's landing) used up its overall time budget."""

    code = "step_budget_exceeded"


class EhrUnreachableError(TransportError):
    """Connection refused, DNS failure or connect timeout: the EHR cannot be reached at all right now."""

    code = "ehr_unreachable"


class SearchIncompleteError(FhirError):
    """A searchset stopped early: ``total`` larger than what arrived with no ``next`` link, or a repeated link."""

    code = "search_incomplete"

    def __init__(self, message: str, url: str | None, *, received: int, total: int | None, reason: str) -> None:
        super().__init__(message, 200, None, url)
        self.received = received
        self.total = total
        self.reason = reason


class BulkExportIncompleteError(BulkExportError):
    """The manifest's ``error`` files report ``error``/``fatal`` outcomes: some types were not (fully) exported."""

    code = "bulk_export_incomplete"

    def __init__(self, message: str, types: Iterable[str]) -> None:
        super().__init__(message)
        self.types = sorted(set(types))


class BulkStatusUnavailableError(BulkExportError):
    """The status URL kept failing transiently (5xx, transport errors): the job stays resumable at that URL."""

    code = "bulk_status_unavailable"


class BulkFileTruncatedError(BulkExportError):
    """A bulk file arrived cut short (no final newline, or fewer bytes than Content-Length) on every attempt."""

    code = "bulk_file_truncated"


class BulkFileTooLargeError(ContentTooLargeError):
    """A bulk file is larger than EHRSYNC_BULK_MAX_FILE_BYTES: that file fails, the next run fetches it again."""

    code = "bulk_file_too_large"


class InsufficientDiskSpaceError(EhrSyncError):
    """Free disk space under the landing zone fell below EHRSYNC_MIN_FREE_DISK_BYTES: downloads stop, resumable."""

    code = "insufficient_disk_space"
