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
look itself (``identifier_search_ignored``). Their word is no proof (the chart view may lag, another person may have
filed it, a 202 may still be processing): the note is marked ``confirmed_not_in_ehr``, and a POST of it without
``If-None-Exist`` (an EHR without conditional create, or ``send_unconditional`` below) is preceded by the search for
it (``engine.writeback.reconcile.found_first``: found, settled unsent; none found or the search failed, POSTed as
confirmed). The mark lasts until the note is ``written`` or ``unknown`` (searched for, or confirmed anew): a note
``failed`` or ``blocked`` since (its connection could not write, a gate closed) keeps it through a plain retry,
whose POST still rests on that word. An ``identifier_search_ignored`` note whose POST was answered 202
(``last_http_status``) is refused without the confirmation saying the EHR may still be filing it: look once it has
had time to.

An EHR that ignores ``identifier`` in ``If-None-Exist`` (Spark, its issue #520) matches the patient's other notes
there, so a note sent with it can never be written (``match_unconfirmed`` with one other note, a 412
``several_matches`` with several). When the person confirms the note is not in the chart and the note's own evidence
shows that behaviour (``_if_none_exist_ignored``), its next POST goes without ``If-None-Exist``
(``send_unconditional``; ``engine.writeback.preflight``), once: ``store.outbox.transition`` clears it as that
attempt ends, and a retry without the confirmation clears it; the person's next confirmed retry sets it again when
that attempt ended before its POST (``failed``/``blocked`` unsent). A lost answer to that POST makes the note
``maybe_stored``, and without If-None-Exist the run only searches for it (never a second blind POST).

A retried note no POST of which may be stored (it leaves with ``maybe_stored`` unset: ``failed`` or ``blocked`` by
answers proving nothing was stored, or the person confirmed it is not in the chart) forgets its Binary
(``binary_id``): the next try creates a fresh one. Kept, a note the EHR refused because that Binary no longer exists
(an EHR purging Binaries no note references yet, or one deleted there) failed the same way on every retry, and only a
new ``idempotencyKey`` helped. Telling that refusal apart by its words (the expression or code naming the Binary) was
not chosen: vendors word it differently (or with a bare numbered code), and a missed one leaves the note stuck. A
Binary forgotten is at worst left in the EHR unreferenced: it holds the note's text but is no note in the chart. A
second DocumentReference would be, so a note that may be in the EHR keeps its Binary (its stored copy references
it; the run repeats the POST only with If-None-Exist or searches first). A Binary job still being filed
(``binary_status_url``) is asked again as before.

Refused by name: a note with several copies in the EHR (``duplicate_notes``: a person removes them there; the
message says, as the note's reason does, whether they carry its identifier or match its patient, type, date and
content, DWB-32/33), and an ``accepted`` note the EHR is still processing (202) while ehrsync still searches for it
by itself (a resend could meet the late original).
"""

from __future__ import annotations

from sqlalchemy import select

from store.database import AppDatabase
from store.models import AuditEvent, utcnow
from store.outbox import NoteRecord, StaleNoteError, get_note, transition

__all__ = ["RETRYABLE_STATES", "RetryRefusedError", "retry_note"]

#: The states a person may retry: the ones the write-back leaves for a person (WRITEBACK.md §3).
RETRYABLE_STATES = frozenset({"failed", "blocked", "unknown"})
# Reason codes the write-back stores (engine/writeback; tests/engine/test_writeback_retry.py checks they match).
DUPLICATES = "duplicate_notes"  # engine.writeback.reconcile: several notes carry the draft's identifier
SEARCH_IGNORED = "identifier_search_ignored"  # engine.writeback.reconcile.IGNORED
ACCEPTED = "accepted"  # engine.writeback.accepted.ACCEPTED: searched again by itself while checks are left
SEVERAL_MATCHES = "several_matches"  # engine.writeback.outcomes: If-None-Exist matched several (412)
MATCH_UNCONFIRMED = "match_unconfirmed"  # engine.writeback.matched: If-None-Exist matched a note not shown to be it
#: The HTTP status of a POST the EHR accepted for later processing (``last_http_status`` kept by the search after it).
ACCEPTED_STATUS = 202
#: Answers to this note's conditional create showing the EHR's If-None-Exist matched notes other than this draft's.
_MATCHED_OTHERS = frozenset({MATCH_UNCONFIRMED, SEVERAL_MATCHES})
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
        found = note.reason or "several notes in the EHR are this note"  # which search found them (no PHI)
        raise RetryRefusedError(
            "note_duplicated_in_ehr",
            f"the EHR holds this note more than once ({found}): a person must remove the duplicates there; "
            "ehrsync never sends this note again",
            note,
        )
    if note.state == "unknown" and note.reason_code == ACCEPTED:
        raise RetryRefusedError(
            "note_not_retryable",
            "the EHR accepted this note for later (202) and ehrsync still searches for it by itself; a resend now "
            "could meet the original when the EHR finishes it (retry once its checks are spent: accepted_unconfirmed, "
            "or identifier_search_ignored where the EHR ignores that search)",
            note,
        )
    if note.reason_code == SEARCH_IGNORED and not confirmed:
        said = "look in the patient's chart"
        if note.last_http_status == ACCEPTED_STATUS:  # the EHR files it later: the chart may not show it yet
            said = (
                "the EHR accepted it for later processing (HTTP 202) and may still be filing it, so the chart may not "
                "show it yet: look in the patient's chart once the EHR has had time to file it"
            )
        raise RetryRefusedError(
            "confirm_not_in_ehr_required",
            f"the EHR ignores the identifier search, so ehrsync cannot tell whether it holds this note: {said}, and "
            "retry with confirmNotInEhr true only if the note is not there",
            note,
        )


def _may_be_in_ehr(note: NoteRecord) -> bool:
    """Whether a POST of this note may be stored: the run must find out (or send with If-None-Exist) first."""
    return note.state == "unknown" or note.maybe_stored or note.reason_code == SEVERAL_MATCHES


def _if_none_exist_ignored(db: AppDatabase, note: NoteRecord) -> bool:
    """Whether this note's own answers show its EHR's If-None-Exist ignoring the identifier: the reason it is left
    with is ``match_unconfirmed`` or ``several_matches``, or it is ``identifier_search_ignored`` and that search
    followed a ``match_unconfirmed`` since the note's last retry (the search's reason replaces the match's; its audit
    event keeps it). ``identifier_search_ignored`` alone is no such evidence: any lost answer on a server ignoring the
    parameter in searches ends so, and where that server's If-None-Exist does apply it, it is the only guard left
    against a second copy should the person have missed the note in the chart.

    A retry whose attempts never POSTed the note (``doc_post``; ``failed``/``blocked`` before it: its connection
    needing re-authorization, a gate closed) weighed nothing new: one that sent it without If-None-Exist
    (``unconditional``) still holds, and the scan reads past a plain one. Before, the reason such a failure left
    replaced the match's, and the person's next confirmed retry sent the note with If-None-Exist again: matched to
    another note once more, written only at a third retry. A retry whose attempts POSTed the note weighed the
    evidence before it (a note its unconditional POST may have stored is sent with If-None-Exist again)."""
    if note.reason_code in _MATCHED_OTHERS:
        return True
    if note.reason_code != SEARCH_IGNORED and not note.confirmed_not_in_ehr:  # no earlier confirmation to keep
        return False
    events = (
        select(AuditEvent.detail)
        .where(AuditEvent.connection_id == note.connection_id, AuditEvent.action == "note.transition")
        .where(AuditEvent.created_at >= note.created_at)  # none of this note's are older: the scan ends there
        .order_by(AuditEvent.id.desc())
        .execution_options(yield_per=200)
    )
    posted = False  # a DocumentReference POST since the retry the scan has reached
    with db.session() as session:
        for detail in session.scalars(events):
            if detail.get("note_id") != note.id:
                continue
            posted = posted or "doc_post" in detail
            if detail.get("retry") and (posted or detail.get("unconditional")):
                return not posted  # weighed by that retry, or its unconditional POST never left
            if detail.get("error_code") in _MATCHED_OTHERS:
                return True
    return False


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
    restart at 0, its ``binary_id`` is forgotten when no POST of it may be stored (module docstring), its reason,
    reason code, HTTP status and the EHR's refusal are cleared (the audit keeps the codes and statuses of the moves
    that set them, never the EHR's words), and it is due now. ``confirm_not_in_ehr``: the
    person checked the chart; the note is sent as one never sent (with If-None-Exist where the EHR offers it, unless
    its If-None-Exist was seen ignoring the identifier: then the next POST goes without it, ``send_unconditional``),
    marked ``confirmed_not_in_ehr``: a POST of it without If-None-Exist is searched for first (kept by a plain retry).
    The audit event names ``actor`` and ``requested_by``, the state and reason code it left (``reason_before``),
    whether the next POST is ``unconditional`` and whether a Binary was forgotten, never the note's text."""
    for race in range(_RACES):
        note = get_note(db, note_id, tenant_id)
        if note is None:
            return None
        _refuse(note, confirm_not_in_ehr)
        unconditional = confirm_not_in_ehr and _if_none_exist_ignored(db, note)
        maybe_stored = _may_be_in_ehr(note) and not confirm_not_in_ehr
        binary = {} if maybe_stored else {"binary_id": None}  # a fresh Binary: the old one may be gone
        detail = {
            "retry": True,
            "requested_by": requested_by,
            "confirmed_not_in_ehr": confirm_not_in_ehr,
            "unconditional": unconditional,
            "reason_before": note.reason_code,
            "attempts_before": note.attempts,
            "binary_forgotten": bool(binary and note.binary_id),
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
                maybe_stored=maybe_stored,
                send_unconditional=unconditional,
                confirmed_not_in_ehr=confirm_not_in_ehr or note.confirmed_not_in_ehr,  # failed/blocked keep the word
                **binary,
            )
        except StaleNoteError:  # a run moved it between the read and the move: read it again, refuse or retry
            if race + 1 == _RACES:
                raise RetryRefusedError(
                    "note_not_retryable", "the note keeps moving under its runs; try again", note
                ) from None
    raise AssertionError("not reached: each pass returns or raises")
