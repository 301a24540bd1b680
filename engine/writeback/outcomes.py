"""What an EHR's "no" or "not now" does to a note (draft-note §5): retry later, blocked, or failed with the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from connectors import errors as ce
from connectors.transport.issue_record import issue_record
from connectors.transport.issues import issue_summary
from engine.checkpoints import checkpoint
from engine.writeback.config import WritebackConfig
from store import AppDatabase
from store.models import utcnow
from store.outbox import NoteRecord, transition
from store.rate_windows import CallBudgetBusyError

__all__ = [
    "MAX_REASON",
    "SEVERAL_MATCHES",
    "ends_note",
    "fail_from",
    "out_of_tries",
    "outcome_issues",
    "outcome_text",
    "outcome_unknown",
    "retry_later",
]

#: The longest reason a note stores (characters).
MAX_REASON = 2000
#: Answers that prove ehrsync itself withheld the request (nothing reached the EHR): the EHR's quota headers said
#: no call is left until a reset, or the vendor's shared call budget had no free call. Not a try of the note's.
_WITHHELD = (ce.QuotaExhaustedError, CallBudgetBusyError)
#: Reason code of a note whose conditional create was refused 412: the If-None-Exist search matched several.
SEVERAL_MATCHES = "several_matches"
#: What such a 412 says, and what it does not: a server ignoring ``identifier`` there matches the patient's notes.
_SEVERAL = (
    "the EHR found several resources matching If-None-Exist on this draft's identifier and created nothing: "
    "notes carrying the identifier exist already, or the EHR ignores the identifier there and "
    "matched the patient's other notes; a person must look before the note is sent again"
)


def outcome_text(exc: ce.EhrSyncError) -> str:
    """The server's OperationOutcome as the note's reason: each issue's severity, code, expressions (the elements it
    names) and ``details.coding`` codes (``connectors.transport.issues``, as in every error message). Never its
    diagnostics or details text: servers quote the refused request there (the note's text, the patient's name, the
    token sent), and the reason is stored and answered by the admin API."""
    return (issue_summary(getattr(exc, "operation_outcome", None)) or str(exc))[:MAX_REASON]


def outcome_issues(exc: ce.EhrSyncError) -> dict[str, Any] | None:
    """The server's OperationOutcome as the note's row keeps it for the person who fixes the note (draft-note §5:
    ``issue[].code/diagnostics/expression``): diagnostics included, the request's credentials already removed
    (``connectors.transport.issue_record``). Only for the row: never logged, audited or published."""
    return issue_record(getattr(exc, "operation_outcome", None))


def outcome_unknown(exc: ce.EhrSyncError) -> bool:
    """Whether a failed POST may still have been stored (draft-note §5): a lost answer (timeout, reset, deadline)
    or a 408/5xx, e.g. from a gateway that gave up while the EHR stored the note. Only answers that prove nothing
    was stored are not: the EHR unreachable (nothing sent), 429 or 503 with ``Retry-After`` (throttled before any
    work), 4xx refusals, and a 301/307/308 redirect ehrsync did not follow (the POST was not processed). A 302/303
    whose result could not be read was processed: unknown."""
    if isinstance(exc, ce.EhrUnreachableError):
        return False
    if isinstance(exc, ce.TransportError):
        return True
    if isinstance(exc, ce.RateLimitedError) or not isinstance(exc, ce.FhirError):
        return False
    if isinstance(exc, ce.CreateRedirectError):  # a 302/303 says the POST was processed; 307/308 that it was not
        return exc.processed
    return exc.status == 408 or exc.status >= 500


def retry_later(db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: ce.EhrSyncError) -> NoteRecord:
    """Back to ``pending`` after a backoff (the server's ``Retry-After`` when given), or ``failed`` when the note
    used its attempts. Only for answers that prove nothing was stored, or with conditional create. A request
    ehrsync withheld (``_WITHHELD``) is not counted as one of the note's tries: a daily quota spent would otherwise
    fail the note after its 8 tries without one reaching the EHR."""
    status = getattr(exc, "status", None)
    detail = {"error_code": exc.code, "status_code": status}
    attempts = _tries(note, exc)
    if attempts >= config.max_attempts:
        return transition(
            db,
            note,
            "failed",
            reason_code="retries_exhausted",
            reason=outcome_text(exc),
            outcome_issues=outcome_issues(exc),
            last_http_status=status,
            detail=detail,
        )
    wait = config.backoff_s(max(attempts, 1), getattr(exc, "retry_after", None))
    note = transition(
        db,
        note,
        "pending",
        attempts=attempts,
        maybe_stored=note.maybe_stored,  # kept for the next attempt's answer (``ends_note``)
        next_attempt_at=utcnow() + timedelta(seconds=wait),
        last_http_status=status,
        reason_code=exc.code,
        reason=None,
        detail={**detail, "retry_in_s": round(wait, 3)},
    )
    checkpoint("writeback.pending")
    return note


def out_of_tries(db: AppDatabase, config: WritebackConfig, note: NoteRecord, tries: int) -> NoteRecord:
    """A note due for a try with none left under ``max_attempts`` (``waiting.tries_spent``: the limit lowered since
    its last try), none of whose POSTs may be stored: ``failed`` ``retries_exhausted``, as its last try would have
    ended under this limit, never POSTed once more. The reason names the limit and the last try's code; the row
    keeps that try's HTTP status. ``tries``: the ones it made (a resumed, unposted ``sending`` note's counted try
    given back)."""
    last = f" (its last try: {note.reason_code})" if note.reason_code else ""
    reason = (
        f"{tries} tries made{last} reach max_attempts ({config.max_attempts}), lowered since: the note is not sent "
        "again; a person's retry gives it its tries again"
    )
    detail = {"error_code": "retries_exhausted", "max_attempts": config.max_attempts}
    return transition(db, note, "failed", reason_code="retries_exhausted", reason=reason, attempts=tries, detail=detail)


def _tries(note: NoteRecord, exc: ce.EhrSyncError) -> int:
    """The note's tries, less the one counted as it went to ``sending`` (``attempt.py``) when ehrsync withheld it."""
    withheld = isinstance(exc, _WITHHELD) and note.state == "sending" and note.attempts >= 1
    return note.attempts - 1 if withheld else note.attempts


def ends_note(config: WritebackConfig, note: NoteRecord, exc: ce.EhrSyncError) -> bool:
    """Whether ``retry_later``/``fail_from`` would end the note on this answer (``failed``/``blocked``) rather than
    try again: its attempts are spent, or the answer is a refusal (not transient, not throttled, not unreached)."""
    if _tries(note, exc) >= config.max_attempts:
        return True
    if isinstance(exc, ce.TransportError):
        return False
    return not (isinstance(exc, ce.FhirError) and (exc.is_transient or isinstance(exc, ce.RateLimitedError)))


def fail_from(db: AppDatabase, config: WritebackConfig, note: NoteRecord, exc: ce.EhrSyncError) -> NoteRecord:
    """An answer from the server: transient → retry later; 403 → blocked; anything else → failed with its text. A
    blocked or failed note keeps the answer's OperationOutcome issues (``outcome_issues``) in its row."""
    status = getattr(exc, "status", None)
    if isinstance(exc, ce.FhirError) and (exc.is_transient or isinstance(exc, ce.RateLimitedError)):
        return retry_later(db, config, note, exc)
    detail = {"error_code": exc.code, "status_code": status}
    state, code, reason = "failed", exc.code, outcome_text(exc)
    if isinstance(exc, ce.FhirForbiddenError):
        state, code = "blocked", "WRITE_NOT_SUPPORTED (missing_scope)"
    elif isinstance(exc, ce.FhirPreconditionFailedError):  # 412: If-None-Exist matched several (DWB-31)
        code, reason = SEVERAL_MATCHES, f"{_SEVERAL}: {reason}"[:MAX_REASON]
    issues = outcome_issues(exc)
    return transition(
        db, note, state, reason_code=code, reason=reason, outcome_issues=issues, last_http_status=status, detail=detail
    )
