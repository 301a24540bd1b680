"""The sensor's reads of the note outbox on SQLite and PostgreSQL: a note waiting for its connection is skipped
while the connection stays in the state it waits on, read again once the connection is active, and notes of
active connections come before any others, so notes that cannot be sent never fill the rows before them."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from store import AppDatabase
from store.models import Connection, utcnow
from store.outbox import NoteRecord, enqueue_note, transition
from store.outbox_queue import due_notes, stalled_notes, waiting_code, woken_notes
from tests.store.conftest import NOTE, add_connection


@pytest.fixture
def two_connections(db: AppDatabase) -> AppDatabase:
    add_connection(db, fhir_base="https://ehr.example/fhir", connection_id="blocked")
    add_connection(db, fhir_base="https://other.example/fhir", connection_id="healthy", tenant_id="t2")
    return db


def _set_status(db: AppDatabase, connection_id: str, status: str) -> None:
    with db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        row.status = status
        session.commit()


def _note(db: AppDatabase, connection_id: str, tenant_id: str, due_s_ago: float) -> NoteRecord:
    note = replace(NOTE, connection_id=connection_id, tenant_id=tenant_id, idempotency_key=uuid.uuid4().hex)
    record, _ = enqueue_note(db, note, actor="test")
    due = utcnow() - timedelta(seconds=due_s_ago)
    return transition(db, record, "pending", next_attempt_at=due)


def _waiting(db: AppDatabase, note: NoteRecord, status: str) -> NoteRecord:
    return transition(db, note, "pending", maybe_stored=True, reason_code=waiting_code(status))


def test_notes_waiting_for_their_connection_never_hide_a_due_note_of_another(two_connections: AppDatabase) -> None:
    db = two_connections
    _set_status(db, "blocked", "needs_reauth")
    waiting = [_waiting(db, _note(db, "blocked", "t1", 900), "needs_reauth") for _ in range(3)]
    unsettled = _note(db, "blocked", "t1", 800)  # not marked yet: one run settles it (fails or marks it)
    healthy = _note(db, "healthy", "t2", 60)
    now = utcnow()
    assert [n.id for n in due_notes(db, now)] == [healthy.id, unsettled.id]
    assert [n.id for n in due_notes(db, now, limit=1)] == [healthy.id]  # active connections' notes first
    assert woken_notes(db, now) == []
    # The connection is in another state than the notes wait on (disconnected): read again, so a run settles them.
    _set_status(db, "blocked", "disconnected")
    assert {n.id for n in due_notes(db, now)} == {healthy.id, unsettled.id, *(n.id for n in waiting)}
    _set_status(db, "blocked", "active")  # re-authorized: due at once, however long they waited
    assert [n.id for n in woken_notes(db, now)] == [n.id for n in waiting]


def test_notes_left_sending_of_active_connections_are_resumed_first(two_connections: AppDatabase) -> None:
    db = two_connections
    _set_status(db, "blocked", "client_rejected")
    old = [transition(db, _note(db, "blocked", "t1", 0), "sending") for _ in range(2)]
    healthy = transition(db, _note(db, "healthy", "t2", 0), "sending")
    later = utcnow() + timedelta(seconds=1)
    assert [n.id for n in stalled_notes(db, later, limit=1)] == [healthy.id]
    assert {n.id for n in stalled_notes(db, later)} == {healthy.id, *(n.id for n in old)}
