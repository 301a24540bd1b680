"""DWB-60: the claim's compare-and-set holds the version as well as the state. A run that read a note ``pending``
and was overtaken (another run claimed it, was throttled and put it back ``pending`` to wait) sees the same state
again; only the version tells it the note moved, so it claims nothing and cannot send it before its wait is over
(SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from store import AppDatabase
from store.outbox import StaleNoteError, enqueue_note, get_note, transition
from tests.store.conftest import NOTE, add_connection


def test_dwb60_a_run_holding_a_note_read_before_it_went_round_to_pending_again_claims_nothing(db: AppDatabase) -> None:
    add_connection(db, fhir_base="https://ehr.example/fhir")
    read, _ = enqueue_note(db, NOTE, actor="test")  # what the slow run read: pending v1
    other = transition(db, read, "sending", attempts=1)
    waiting = transition(db, other, "pending", reason_code="rate_limited")  # pending again, v3
    assert (waiting.state, waiting.version) == ("pending", 3)
    with pytest.raises(StaleNoteError):
        transition(db, read, "sending", attempts=1)
    now = get_note(db, read.id)
    assert now is not None and (now.state, now.version, now.attempts) == ("pending", 3, 1)
