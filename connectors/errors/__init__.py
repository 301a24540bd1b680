"""The one exception hierarchy for everything that talks to an EHR.

One module per family (:mod:`.base`, :mod:`.oauth`, :mod:`.fhir`, :mod:`.bulk`), all importable from here.
Callers catch what they mean (a refused refresh is not a timeout), never a bare ``Exception``.
Every error carries what the server said (OAuth ``error`` fields or the FHIR ``OperationOutcome``)
but never a token, code, secret or any resource content: messages are safe to log. Of an OperationOutcome a message
says each issue's severity, code, expression and ``details.coding`` codes (``connectors.transport.issues``), never its
diagnostics or details text, which servers fill with the request they refused (the patient's name, a search value).

    EhrSyncError
    ├── ConfigurationError            bad local configuration (provider config, keys, URLs)
    │   ├── AuthMethodNotAllowedError  a client auth method / alg the vendor's plugin does not declare
    │   ├── TenantSettingInvalidError  a tenant switch stored neither true nor false (engine and auth service alike)
    ├── DiscoveryError                SMART configuration / CapabilityStatement unusable (SAL-02)
    ├── SecurityPolicyError           issuer not allow-listed, token sent to a foreign host (SAL-06, SAL-40)
    ├── OAuthError                    an OAuth 2.0 error response (SAL-36), one subclass per code
    │   ├── AccessDeniedError, InvalidRequestError, InvalidClientError, InvalidGrantError,
    │   │   InvalidScopeError, UnauthorizedClientError, TemporarilyUnavailableError
    │   ├── UnusableTokenAnswerError  a 200 token answer that cannot be used (keeps a rotated refresh token)
    ├── NeedsReauthError              the grant is gone: a person must authorize again (SAL-25)
    ├── TransportError                timeout, dropped connection, DNS: outcome unknown, retryable
    │   ├── EhrUnreachableError       connection refused / DNS failure twice: stop the run, do not retry for minutes
    │   ├── RequestDeadlineError      one request outlived its overall deadline (a trickling server)
    │   ├── TransferTooSlowError      a body (a Bulk file) arrived slower than its low-speed limit
    │   ├── TransferDeadlineError     a transfer (a Bulk file, all its attempts) outlived its wall-clock deadline
    ├── StepBudgetExceededError       a sync step outlived its overall time budget
    ├── ContentTooLargeError          a download exceeded its size cap (nothing was kept)
    │   ├── ResponseTooLargeError     a JSON body exceeded the per-response byte limit
    │   ├── GzipPastContentError      a stored gzip file read far past what it inflates to (empty members)
    ├── UnsupportedContentEncodingError  a body compressed as ehrsync never asked (br, zstd): not decodable
    ├── FhirError                     a FHIR REST error response (status + OperationOutcome)
    │   ├── FhirUnauthorizedError (401), FhirForbiddenError (403), FhirNotFoundError (404),
    │   │   FhirGoneError (410), FhirPreconditionFailedError (412), FhirUnprocessableError (422),
    │   │   CreateRedirectError (a create redirected where ehrsync does not follow),
    │   │   AsyncStatusUnreadableError (a 202's status endpoint answered 2xx naming no outcome),
    │   │   RateLimitedError (429; QuotaExhaustedError, CallBudgetBusyError), FhirServerError (5xx)
    │   ├── FhirWithoutTokenRefusedError  401 to a request sent without the token on purpose (a signed file URL)
    │   ├── SearchLinkExpiredError    a paging `next` link answered 404/410: restart from the stored mark (BDX-29)
    │   ├── SearchIncompleteError     a searchset missed matches (total > distinct received, no next; a repeated
    │   │                             next or page; endless empty pages; an error OperationOutcome entry)
    ├── BulkExportError               a bulk job failed, expired or produced an invalid manifest/file
    │   ├── BulkExportBusyError       kick-off refused (429) or another export of the client+tenant in flight
    │   ├── BulkFileExpiredError      file 404/410 after expiry: re-run from the same _since (BDX-19)
    │   ├── BulkFileTruncatedError    a file arrived cut short on every attempt
    │   ├── BulkFileTooSlowError      a file arrived slower than its low-speed limit on every attempt
    │   ├── BulkFileDeadlineError     a file was not downloaded within its deadline (all attempts together)
    └── WriteNotSupportedError        flags, scopes or the CapabilityStatement forbid a write (DWB)
"""

from __future__ import annotations

from connectors.errors.base import (
    AuthMethodNotAllowedError,
    ConfigurationError,
    ContentTooLargeError,
    DiscoveryError,
    EhrSyncError,
    EhrUnreachableError,
    GzipPastContentError,
    InsufficientDiskSpaceError,
    NeedsReauthError,
    RequestDeadlineError,
    ResponseTooLargeError,
    SecurityPolicyError,
    StepBudgetExceededError,
    TenantSettingInvalidError,
    TransferDeadlineError,
    TransferTooSlowError,
    TransportError,
    UnsupportedContentEncodingError,
    WriteNotSupportedError,
)
from connectors.errors.bulk import (
    BulkExportBusyError,
    BulkExportError,
    BulkExportIncompleteError,
    BulkFileDeadlineError,
    BulkFileExpiredError,
    BulkFileTooLargeError,
    BulkFileTooSlowError,
    BulkFileTruncatedError,
    BulkStatusUnavailableError,
)
from connectors.errors.fhir import (
    TRANSIENT_ISSUE_CODES,
    TRANSIENT_STATUSES,
    AsyncStatusUnreadableError,
    CallBudgetBusyError,
    CreateRedirectError,
    FhirError,
    FhirForbiddenError,
    FhirGoneError,
    FhirNotFoundError,
    FhirPreconditionFailedError,
    FhirServerError,
    FhirUnauthorizedError,
    FhirUnprocessableError,
    FhirWithoutTokenRefusedError,
    QuotaExhaustedError,
    RateLimitedError,
    SearchIncompleteError,
    SearchLinkExpiredError,
    fhir_error_for_status,
    is_transient_answer,
)
from connectors.errors.oauth import (
    MALFORMED_ERROR,
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuthError,
    TemporarilyUnavailableError,
    UnauthorizedClientError,
    UnusableTokenAnswerError,
    client_credentials_refusal,
    is_refusal,
    oauth_error_from_response,
)

__all__ = [
    "MALFORMED_ERROR",
    "TRANSIENT_ISSUE_CODES",
    "TRANSIENT_STATUSES",
    "AccessDeniedError",
    "AsyncStatusUnreadableError",
    "AuthMethodNotAllowedError",
    "BulkExportBusyError",
    "BulkExportError",
    "BulkExportIncompleteError",
    "BulkFileDeadlineError",
    "BulkFileExpiredError",
    "BulkFileTooLargeError",
    "BulkFileTooSlowError",
    "BulkFileTruncatedError",
    "BulkStatusUnavailableError",
    "CallBudgetBusyError",
    "ConfigurationError",
    "ContentTooLargeError",
    "CreateRedirectError",
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
    "FhirWithoutTokenRefusedError",
    "GzipPastContentError",
    "InsufficientDiskSpaceError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "NeedsReauthError",
    "OAuthError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "RequestDeadlineError",
    "ResponseTooLargeError",
    "SearchIncompleteError",
    "SearchLinkExpiredError",
    "SecurityPolicyError",
    "StepBudgetExceededError",
    "TemporarilyUnavailableError",
    "TenantSettingInvalidError",
    "TransferDeadlineError",
    "TransferTooSlowError",
    "TransportError",
    "UnauthorizedClientError",
    "UnsupportedContentEncodingError",
    "UnusableTokenAnswerError",
    "WriteNotSupportedError",
    "client_credentials_refusal",
    "fhir_error_for_status",
    "is_refusal",
    "is_transient_answer",
    "oauth_error_from_response",
]
