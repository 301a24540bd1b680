"""DWB-31/63, on SQLite and PostgreSQL: ``send_unconditional`` (a person's confirmed retry where the EHR's
If-None-Exist ignores the identifier) holds for one attempt only. Only a confirmed retry with that evidence in the
note's own answers sets it; a retry without the confirmation clears it; any move ending the attempt clears it. The
person's word (``confirmed_not_in_ehr``) lasts until the note is ``written`` or ``unknown``: a ``failed`` or
``blocked`` note keeps it, through a plain retry too (its POST still rests on that word)."""

from __future__ import annotations

import pytest

from store import AppDatabase
from store.outbox import NoteRecord, enqueue_note, transition
from store.outbox_retry import retry_note
from tests.store.conftest import NOTE, add_connection


@pytest.fixture
def note(db: AppDatabase) -> NoteRecord:
    add_connection(db, fhir_base="https://ehr.example/fhir")
    return enqueue_note(db, NOTE, actor="test")[0]


def _left(db: AppDatabase, note: NoteRecord, state: str, code: str, **detail: object) -> NoteRecord:
    sending = transition(db, note, "sending", attempts=1)
    return transition(db, sending, state, reason_code=code, detail={"error_code": code, **detail})


def _retry(db: AppDatabase, note: NoteRecord, confirmed: bool) -> NoteRecord:
    moved = retry_note(db, note.id, note.tenant_id, actor="test", confirm_not_in_ehr=confirmed)
    assert moved is not None and moved.state == "pending"
    return moved


def test_dwb63_the_flag_lasts_one_attempt_and_a_plain_retry_clears_it(db: AppDatabase, note: NoteRecord) -> None:
    retried = _retry(db, _left(db, note, "unknown", "match_unconfirmed"), confirmed=True)
    assert retried.send_unconditional and not retried.maybe_stored
    sending = transition(db, retried, "sending", attempts=1)
    posting = transition(db, sending, "sending", doc_posted=True)  # kept while its attempt lasts (a resumed run too)
    waiting = transition(db, posting, "pending", attempts=1)  # e.g. a 429: nothing stored, the same attempt again
    for kept in (retried, sending, posting, waiting):  # a person's word too (``confirmed_not_in_ehr``, DWB-63)
        assert kept.send_unconditional and kept.confirmed_not_in_ehr
    marks = {"send_unconditional": True, "confirmed_not_in_ehr": True}
    for state in ("unknown", "failed", "blocked", "written"):
        ended = transition(db, transition(db, waiting, "sending"), state)
        assert not ended.send_unconditional, state
        assert ended.confirmed_not_in_ehr == (state in ("failed", "blocked")), state  # unsent: the word stands
        waiting = transition(db, transition(db, ended, "sending", **marks), "pending")
    failed = transition(db, transition(db, waiting, "sending"), "failed", reason_code="several_matches")
    plain = _retry(db, transition(db, failed, "failed", **marks), confirmed=False)
    assert not plain.send_unconditional and plain.confirmed_not_in_ehr
    unknown = transition(db, transition(db, plain, "sending"), "unknown", reason_code="response_lost")
    assert not _retry(db, unknown, confirmed=False).confirmed_not_in_ehr  # searched for instead (``maybe_stored``)


def test_dwb63_an_ignored_search_counts_only_after_a_match_since_the_last_retry(
    db: AppDatabase, note: NoteRecord
) -> None:
    """``identifier_search_ignored`` after a lost answer is no evidence of If-None-Exist ignoring the identifier;
    after a ``match_unconfirmed`` (audited before the search replaced its reason code) it is; a retry since resets."""
    lost = _left(db, note, "unknown", "response_lost")
    ignored = transition(db, lost, "unknown", reason_code="identifier_search_ignored")
    plain = _retry(db, ignored, confirmed=True)
    assert not plain.send_unconditional and plain.confirmed_not_in_ehr  # searched for first where sent unconditionally
    matched = transition(db, transition(db, plain, "sending"), "unknown", detail={"error_code": "match_unconfirmed"})
    ignored = transition(db, matched, "unknown", reason_code="identifier_search_ignored")
    assert _retry(db, ignored, confirmed=True).send_unconditional


def test_dwb31_63_the_evidence_outlasts_retries_whose_attempts_never_posted(db: AppDatabase, note: NoteRecord) -> None:
    """A confirmed retry sending without If-None-Exist whose attempt ended before its POST (``connection_*``), and a
    plain retry that did so too, weighed nothing new: the next confirmed retry sends without it again. Once such a
    POST left (``doc_post``), the evidence before it was weighed: If-None-Exist again (it may have stored the note)."""
    unsent = _retry(db, _left(db, note, "unknown", "match_unconfirmed"), confirmed=True)
    for confirmed in (False, True):
        failed = _left(db, unsent, "failed", "connection_needs_reauth")
        unsent = _retry(db, failed, confirmed=confirmed)
        assert unsent.send_unconditional == confirmed and unsent.confirmed_not_in_ehr
    sending = transition(db, unsent, "sending", attempts=1)
    posted = transition(db, sending, "sending", doc_posted=True, detail={"doc_post": 1, "unconditional": True})
    refused = transition(db, posted, "failed", reason_code="fhir_unprocessable", detail={"error_code": "x"})
    assert not _retry(db, refused, confirmed=True).send_unconditional
