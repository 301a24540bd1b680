"""DWB-63: a person's plain retry of a note the EHR may hold keeps it one that may be stored (``maybe_stored``), so
its run searches for it or sends it with If-None-Exist, never as a note never sent: a note ``failed`` or
``blocked`` with a POST that may be stored, and one whose If-None-Exist matched several notes (``several_matches``,
a 412). A note whose POST proved nothing stored is retried as one never sent; the person's confirmation that the
note is not in the chart is the other way out (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from store import AppDatabase
from store.models import utcnow
from store.outbox import NoteRecord, enqueue_note, transition
from store.outbox_retry import retry_note
from tests.store.conftest import NOTE, add_connection


def _ended(db: AppDatabase, state: str, reason_code: str, maybe_stored: bool) -> NoteRecord:
    add_connection(db, fhir_base="https://ehr.example/fhir")
    note, _ = enqueue_note(db, NOTE, actor="test")
    sending = transition(db, note, "sending", attempts=1, doc_posted=True, maybe_stored=maybe_stored)
    return transition(db, sending, state, reason_code=reason_code)


@pytest.mark.parametrize(
    ("state", "reason_code", "maybe_stored", "kept"),
    [
        ("failed", "fhir_unprocessable", True, True),
        ("blocked", "WRITE_NOT_SUPPORTED (missing_scope)", True, True),
        ("failed", "several_matches", False, True),
        ("failed", "fhir_unprocessable", False, False),
    ],
)
def test_dwb63_a_plain_retry_of_a_note_the_ehr_may_hold_keeps_it_searched_for(
    db: AppDatabase, state: str, reason_code: str, maybe_stored: bool, kept: bool
) -> None:
    note = _ended(db, state, reason_code, maybe_stored)
    retried = retry_note(db, note.id, note.tenant_id, actor="test")
    assert retried is not None and (retried.state, retried.maybe_stored) == ("pending", kept)


def test_dwb63_a_confirmed_retry_of_a_note_that_may_be_stored_is_sent_as_never_sent(db: AppDatabase) -> None:
    note = _ended(db, "failed", "several_matches", True)
    retried = retry_note(db, note.id, note.tenant_id, actor="test", confirm_not_in_ehr=True)
    assert retried is not None and (retried.maybe_stored, retried.confirmed_not_in_ehr) == (False, True)


def test_dwb63_a_retry_resets_every_try_count_and_answer_and_is_due_now(db: AppDatabase) -> None:
    """Its tries (the note's and its Binary's), reason, reason code and last HTTP status restart; it is due now."""
    add_connection(db, fhir_base="https://ehr.example/fhir")
    note, _ = enqueue_note(db, NOTE, actor="test")
    later = utcnow() + timedelta(hours=1)
    sending = transition(db, note, "sending", attempts=3, binary_posts=2)
    failed = transition(
        db,
        sending,
        "failed",
        reason_code="retries_exhausted",
        reason="the EHR was busy",
        last_http_status=429,
        next_attempt_at=later,
    )
    retried = retry_note(db, failed.id, failed.tenant_id, actor="test")
    assert retried is not None and retried.state == "pending"
    assert (retried.attempts, retried.binary_posts) == (0, 0)
    assert (retried.reason_code, retried.reason, retried.last_http_status) == (None, None, None)
    assert retried.next_attempt_at <= utcnow()


@pytest.mark.parametrize(("confirmed", "binary_id"), [(False, "bin-1"), (True, None)])
def test_dwb63_a_note_the_ehr_may_hold_keeps_its_binary_unless_the_person_says_it_is_not_there(
    db: AppDatabase, confirmed: bool, binary_id: str | None
) -> None:
    """A plain retry of an ``unknown`` note keeps the Binary its POST referenced (the copy the EHR may hold
    references it; the run searches first or repeats the POST with If-None-Exist); the person's confirmation that
    the note is not in the chart forgets it (it may be gone from the EHR: the next try creates a fresh one)."""
    add_connection(db, fhir_base="https://ehr.example/fhir")
    note, _ = enqueue_note(db, NOTE, actor="test")
    sending = transition(db, note, "sending", attempts=1, binary_id="bin-1", doc_posted=True)
    unknown = transition(db, sending, "unknown", reason_code="response_lost")
    retried = retry_note(db, unknown.id, unknown.tenant_id, actor="test", confirm_not_in_ehr=confirmed)
    assert retried is not None and retried.binary_id == binary_id
