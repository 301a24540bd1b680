"""FHIR REST error answers (status + OperationOutcome) and the one rule for which answers are transient."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connectors.errors.base import EhrSyncError


class FhirError(EhrSyncError):
    """A FHIR REST error: HTTP status plus the server's OperationOutcome when it sent one."""

    code = "fhir_error"

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
        issues = (self.operation_outcome or {}).get("issue")  # a server's malformed answer: null, not a list
        return [str(i.get("code")) for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []

    @property
    def is_transient(self) -> bool:
        """True when the server says the failure is temporary (OperationOutcome ``transient``)."""
        return is_transient_answer(self.status, self.issue_codes)


class FhirUnauthorizedError(FhirError):
    code = "fhir_unauthorized"


class FhirForbiddenError(FhirError):
    code = "fhir_forbidden"


class FhirWithoutTokenRefusedError(FhirError):
    """HTTP 401 to a request sent without ehrsync's token on purpose (a Bulk file with ``requiresAccessToken``
    false, or a redirect that left the FHIR server): the host wants credentials of its own (an expired signed URL),
    so it says nothing about the OAuth client and never re-mints or rejects it (BDX-16)."""

    code = "fhir_refused_without_token"


class FhirNotFoundError(FhirError):
    code = "fhir_not_found"


class FhirGoneError(FhirError):
    code = "fhir_gone"


class FhirPreconditionFailedError(FhirError):
    code = "fhir_precondition_failed"


class CreateRedirectError(FhirError):
    """A create answered with a redirect ehrsync does not follow: ``Location`` leaves the FHIR base, names nothing
    usable, or the result it points at could not be read. ``processed``: a 302/303 (the server processed the POST
    and points at its result, so a note may be stored); a 301/307/308 says the POST was not processed."""

    code = "create_redirect"

    @property
    def processed(self) -> bool:
        return self.status in (302, 303)


class AsyncStatusUnreadableError(FhirError):
    """An async status endpoint answered 2xx with a body naming no outcome (not a ``batch-response``, not the
    resource): the request's outcome is not known from it, and it is no refusal (FHIR R4 async.html)."""

    code = "async_status_unreadable"


class FhirUnprocessableError(FhirError):
    code = "fhir_unprocessable"


class FhirServerError(FhirError):
    code = "fhir_server_error"


class SearchLinkExpiredError(FhirError):
    """A search ``next`` link answered 404/410: restart the search from the stored high-water mark (BDX-29)."""

    code = "search_link_expired"


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


class QuotaExhaustedError(RateLimitedError):
    """The EHR's own quota headers said no call is left until a reset further away than ehrsync waits (or past the
    step's budget): nothing was sent. A throttle like a 429 (``retry_after``: seconds until the reset); the message
    names the quota, the header that said so and when it resets."""

    code = "quota_exhausted"


class CallBudgetBusyError(RateLimitedError):
    """The vendor's call budget (``connectors.http.ratelimit``: this process's, or one every process shares through
    the app database) had no free call before the caller's deadline, so nothing was sent: a throttle like a 429 (the
    auth service answers ``ehr_unavailable``, try again shortly; a sync step fails with its mark kept and the run is
    retried with backoff). ``retry_after``: seconds until the next call comes free."""

    code = "call_budget_busy"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, 429, retry_after=retry_after)


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


#: HTTP statuses that mean "try again later" (the one list: the retry policy and ``FhirError.is_transient``).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: OperationOutcome ``issue.code`` values of FHIR's ``transient`` family that make any status retryable.
TRANSIENT_ISSUE_CODES = frozenset({"transient", "throttled", "timeout", "lock-error", "no-store"})


def is_transient_answer(status: int, issue_codes: Iterable[str] = ()) -> bool:
    """Whether an EHR answer is worth retrying: a transient status, or an OperationOutcome saying so."""
    return status in TRANSIENT_STATUSES or any(code in TRANSIENT_ISSUE_CODES for code in issue_codes)


class SearchIncompleteError(FhirError):
    """A searchset did not return every match; ``reason`` says how it showed.

    ``no_next``: fewer distinct matches than ``total`` arrived and there is no ``next`` link; ``repeated_next``: a
    ``next`` link repeats one already followed; ``repeated_page``: a page with a ``next`` link brought no new
    match; ``repeated_match``: a match of an earlier page came again (offset paging over changing data, which
    skips one for each it repeats); ``empty_pages``: more than ``MAX_EMPTY_PAGES`` pages in a row brought no match
    but a ``next`` link (a cursor that changes on every empty page, never reaching data); ``error_outcome``: a page
    carried an OperationOutcome saying matches are missing (``error``/``fatal``, or a ``warning`` coded
    ``incomplete``/``too-costly``/``timeout``; the message says its severities and codes, never its diagnostics).
    ``received`` counts distinct matches.
    """

    code = "search_incomplete"

    def __init__(self, message: str, url: str | None, *, received: int, total: int | None, reason: str) -> None:
        super().__init__(message, 200, None, url)
        self.received = received
        self.total = total
        self.reason = reason
