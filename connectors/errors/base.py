"""The base of the hierarchy and the errors of no particular protocol: configuration, policy, transport,
budgets and size limits."""

from __future__ import annotations


class EhrSyncError(Exception):
    """Base of every ehrsync error; ``code`` is a stable machine-readable name."""

    code: str = "ehrsync_error"
    #: Seconds the EHR's ``Retry-After`` said to wait before asking again (RFC 9110 §10.2.3: delta-seconds or an
    #: HTTP-date, read by ``connectors.http.parse_retry_after``), on an error made from a 429 or 503 answer that
    #: carried a usable one; None otherwise. Unclamped: each caller bounds it for its own use.
    retry_after: float | None = None
    _after_lost_answer = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def after_lost_answer(self) -> bool:
        """Whether an earlier try of the request this error ends may have been processed, its answer lost (a timeout,
        a dropped connection, a 5xx the transport retried, a body cut off; set by ``FhirSession.request``, or on the
        error this one was raised from): the error is the last try's alone and proves nothing of that one, so a create
        retried with If-None-Exist may be stored however it ends."""
        cause = self.__cause__
        return self._after_lost_answer or (isinstance(cause, EhrSyncError) and cause.after_lost_answer)

    @after_lost_answer.setter
    def after_lost_answer(self, value: bool) -> None:
        self._after_lost_answer = value


class ConfigurationError(EhrSyncError):
    code = "configuration_error"


class AuthMethodNotAllowedError(ConfigurationError):
    """A client auth method or signing alg the vendor's plugin does not declare (vendors.md §8 ``auth_methods``):
    the message names the vendor, what was chosen and what is allowed."""


class TenantSettingInvalidError(ConfigurationError):
    """A decision hangs on a tenant switch stored neither true nor false (``connectors.tenant_switches``): it is read
    neither as on nor as off; the message names the setting and the value's JSON type, never the value. The engine
    records it by this code (a Bulk run that fails ``tenant_setting_invalid``); the auth service answers it 409
    ``configuration_error``, as every configuration problem that is not one of its own codes
    (``auth_service.services.errors.service_error_from``). An operator fixes the row (``ehrsync auth seed``)."""

    code = "tenant_setting_invalid"


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


class ContentTooLargeError(EhrSyncError):
    """A download exceeded its size cap; the partial file was removed."""

    code = "content_too_large"


class UnsupportedContentEncodingError(EhrSyncError):
    """The server compressed a body in a way ehrsync did not ask for and cannot decode (``br``, ``zstd``, ...)."""

    code = "unsupported_content_encoding"


class WriteNotSupportedError(EhrSyncError):
    """A write was refused before reaching the server; ``reason`` says which gate closed."""

    code = "WRITE_NOT_SUPPORTED"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"write not supported: {reason}")
        self.reason = reason

    @property
    def reason_code(self) -> str:
        """A blocked note's ``reasonCode``, e.g. ``WRITE_NOT_SUPPORTED (encounter_required)``: the write-back run stores
        it and ``POST /api/ehr/notes`` answers it for a note refused at submission."""
        return f"{self.code} ({self.reason})"


class ResponseTooLargeError(ContentTooLargeError):
    """A JSON body (search page, read, CapabilityStatement) went past the per-response byte limit."""

    code = "response_too_large"


class GzipPastContentError(ContentTooLargeError):
    """A file stored gzipped whose compressed bytes run far past what they inflate to (members that inflate to
    nothing, zero padding): gzip reads those a member or a byte at a time, ~30 min of CPU for 10 GiB."""


class RequestDeadlineError(TransportError):
    """One request took longer than its overall deadline (e.g. a server trickling bytes): not retried."""

    code = "request_deadline_exceeded"


class TransferTooSlowError(TransportError):
    """A body kept arriving slower than its low-speed limit (bytes per second over a window): a download that may
    rightly stream for hours has no request deadline, so a server trickling it is cut off this way."""

    code = "transfer_too_slow"


class TransferDeadlineError(TransportError):
    """A transfer (a Bulk file, every attempt of it together) was still under way when its wall-clock deadline
    passed: a body kept just above its low-speed limit must not hold a download worker until its size limit."""

    code = "transfer_deadline_exceeded"


class StepBudgetExceededError(EhrSyncError):
    """A sync step (one resource type's landing) used up its overall time budget."""

    code = "step_budget_exceeded"


class EhrUnreachableError(TransportError):
    """Connection refused, DNS failure or connect timeout: the EHR cannot be reached at all right now."""

    code = "ehr_unreachable"


class InsufficientDiskSpaceError(EhrSyncError):
    """Free disk space under the landing zone fell below EHRSYNC_MIN_FREE_DISK_BYTES: downloads stop, resumable."""

    code = "insufficient_disk_space"
