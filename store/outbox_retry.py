"""A person's retry of a note the write-back left for one (DWB-63): ``failed``, ``blocked`` or ``unknown`` back to
``pending``, due now, with its full tries again.

The retry is one more versioned transition (``store.outbox.transition``): it moves the note only from the state and
version it was read at, so a note a run claimed meanwhile (``sending``) is never moved, and a double click finds the
note ``pending`` and is refused, never bumped twice. The new version is a new run key, so the write-back sensor
asks for a run as for any due ``pending`` note: there is no second path to the EHR, and every gate runs again (a
note still blocked blocks again, with its reason).

A retry never risks a second copy of the note in the patient's chart. A note that may be in the EHR (``unknown``,
``maybe_stored`` set by an earlier lost answer, or a 412 ``several_matches``) stays ``maybe_stored``: the run sends
it only with ``If-None-Exist``, or searches for it by its identifier first (found: ``written``; not found: still
``unknown``, never POSTed blindly), exactly as for any such note. Only the person's ``confirm_not_in_ehr`` (they
looked in the chart, it is not there) lets a run POST it as a note never sent; it is required where ehrsync cannot
look itself (``identifier_search_ignored``). Refused by name: a note with several copies in the EHR
(``duplicate_notes``: a person removes them there), and an ``accepted`` note the EHR is still processing (202)
while ehrsync still searches for it by itself (a resend could meet the late original).
"""

from __future__ import annotations

from store.database import AppDatabase
from store.models import utcnow
from store.outbox import NoteRecord, StaleNoteError, get_note, transition

__all__ = ["RETRYABLE_STATES", "RetryRefusedError", "retry_note"]

#: The states a person may retry: the ones the write-back leaves for a person (WRITEBACK.md §3).
RETRYABLE_STATES = frozenset({"failed", "blocked", "unknown"})
# Reason codes the write-back stores (engine/writeback; tests/engine/test_writeback_retry.py checks they match).
DUPLICATES = "duplicate_notes"  # engine.writeback.reconcile: several notes carry the draft's identifier
SEARCH_IGNORED = "identifier_search_ignored"  # engine.writeback.reconcile.IGNORED
ACCEPTED = "accepted"  # engine.writeback.accepted.ACCEPTED: searched again by itself while checks are left
SEVERAL_MATCHES = "several_matches"  # engine.writeback.outcomes: If-None-Exist matched several (412)
#: Reads and moves tried when a run moves the note between the read and the move (each re-checks the refusals).
_RACES = 5


class RetryRefusedError(Exception):
    """The note cannot be retried as asked; ``code`` names why (the API's 409 error code)."""

    def __init__(self, code: str, message: str, note: NoteRecord) -> None:
        super().__init__(message)
        self.code, self.state, self.reason_code = code, note.state, note.reason_code


def _refuse(note: NoteRecord, confirmed: bool) -> None:
    if note.state not in RETRYABLE_STATES:
        said = "a run may be sending it now" if note.state == "sending" else f"it is {note.state} already"
        if note.state == "written":
            said = "the EHR holds it"
        raise RetryRefusedError("note_not_retryable", f"a {note.state} note is not retried: {said}", note)
    if note.reason_code == DUPLICATES:
        raise RetryRefusedError(
            "note_duplicated_in_ehr",
            "several notes carry this draft's identifier in the EHR: a person must remove the duplicates there; "
            "ehrsync never sends this note again",
            note,
        )
    if note.state == "unknown" and note.reason_code == ACCEPTED:
        raise RetryRefusedError(
            "note_not_retryable",
            "the EHR accepted this note for later (202) and ehrsync still searches for it by itself; a resend now "
            "could meet the original when the EHR finishes it (retry once it is accepted_unconfirmed)",
            note,
        )
    if note.reason_code == SEARCH_IGNORED and not confirmed:
        raise RetryRefusedError(
            "confirm_not_in_ehr_required",
            "the EHR ignores the identifier search, so ehrsync cannot tell whether it holds this note: look in the "
            "patient's chart, and retry with confirmNotInEhr true only if the note is not there",
            note,
        )


def _may_be_in_ehr(note: NoteRecord) -> bool:
    """Whether a POST of this note may be stored: the run must find out (or send with If-None-Exist) first."""
    return note.state == "unknown" or note.maybe_stored or note.reason_code == SEVERAL_MATCHES


def retry_note(
    db: AppDatabase,
    note_id: str,
    tenant_id: str,
    *,
    actor: str,
    confirm_not_in_ehr: bool = False,
    requested_by: str | None = None,
) -> NoteRecord | None:
    """Move the note to ``pending`` for a person (None: no such note for ``tenant_id``); ``RetryRefusedError`` when
    it may not be. Its tries (``attempts`` and ``binary_posts``: a Binary left behind is no note in the chart)
    restart at 0, its reason, reason code, HTTP status and the EHR's refusal are cleared (the audit keeps the codes
    and statuses of the moves that set them, never the EHR's words), and it is due now. ``confirm_not_in_ehr``: the
    person checked the chart; the note is sent as one never sent (still with If-None-Exist where the EHR offers it).
    The audit event names ``actor`` and ``requested_by``, the state and reason code it left (``reason_before``),
    never the note's text."""
    for race in range(_RACES):
        note = get_note(db, note_id, tenant_id)
        if note is None:
            return None
        _refuse(note, confirm_not_in_ehr)
        detail = {
            "retry": True,
            "requested_by": requested_by,
            "confirmed_not_in_ehr": confirm_not_in_ehr,
            "reason_before": note.reason_code,
            "attempts_before": note.attempts,
        }
        try:
            return transition(
                db,
                note,
                "pending",
                actor=actor,
                detail=detail,
                attempts=0,
                binary_posts=0,
                next_attempt_at=utcnow(),
                reason_code=None,
                reason=None,
                last_http_status=None,
                maybe_stored=_may_be_in_ehr(note) and not confirm_not_in_ehr,
            )
        except StaleNoteError:  # a run moved it between the read and the move: read it again, refuse or retry
            if race + 1 == _RACES:
                raise RetryRefusedError(
                    "note_not_retryable", "the note keeps moving under its runs; try again", note
                ) from None
    raise AssertionError("not reached: each pass returns or raises")
