"""The note outbox on SQLite and PostgreSQL: one note per idempotency key (also when requests race), a replay
with another body is a conflict, transitions are compare-and-set and audited in the same commit (DWB-30)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from store import AppDatabase
from store.errors import UnknownConnectionError
from store.models import AuditEvent, NoteOutbox
from store.outbox import (
    IdempotencyConflictError,
    StaleNoteError,
    enqueue_note,
    transition,
)
from store.outbox_reads import outbox_counts, outbox_metadata_rows
from tests.store.conftest import NOTE, add_connection


@pytest.fixture
def outbox_db(db: AppDatabase) -> AppDatabase:
    add_connection(db, fhir_base="https://ehr.example/fhir")
    return db


def test_dwb30_one_note_per_key_with_its_identifier_chosen_once(outbox_db: AppDatabase) -> None:
    """DWB-30: the business identifier is chosen at enqueue time and a replay returns the same note."""
    first, created = enqueue_note(outbox_db, NOTE, actor="test")
    again, created_again = enqueue_note(outbox_db, NOTE, actor="test")
    assert (created, created_again) == (True, False)
    assert (again.id, again.draft_id) == (first.id, first.draft_id) and first.state == "pending"
    with pytest.raises(IdempotencyConflictError):
        enqueue_note(outbox_db, replace(NOTE, body="Plan: something else."), actor="test")
    assert outbox_counts(outbox_db)["pending"] == 1
    assert "body" not in outbox_metadata_rows(outbox_db)[0] and "Plan" not in repr(first)


@pytest.mark.parametrize("connection", [("c1", "t2"), ("c9", "t1")], ids=["another_tenants", "unknown"])
def test_dwb12_a_note_naming_a_connection_not_of_its_tenant_is_refused_unstored(
    outbox_db: AppDatabase, connection: tuple[str, str]
) -> None:
    """DWB-12: the outbox stores a note only for a connection of the note's own tenant (c1 is t1's), whoever calls
    it; before, another tenant's connection was taken and an unknown one failed on the foreign key, untyped."""
    add_connection(outbox_db, fhir_base="https://ehr.example/fhir", connection_id="c2", tenant_id="t2")
    connection_id, tenant_id = connection
    note = replace(NOTE, connection_id=connection_id, tenant_id=tenant_id)
    with pytest.raises(UnknownConnectionError, match=f"connection {connection_id} is no connection of tenant"):
        enqueue_note(outbox_db, note, actor="test")
    with outbox_db.session() as session:
        assert session.scalar(select(func.count()).select_from(NoteOutbox)) == 0


def test_racing_requests_with_one_key_make_one_note(outbox_db: AppDatabase) -> None:
    results: list[str] = []
    barrier = threading.Barrier(6)

    errors: list[BaseException] = []

    def submit() -> None:
        barrier.wait()
        try:
            results.append(enqueue_note(outbox_db, NOTE, actor="test")[0].id)
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 6
    with outbox_db.session() as session:
        assert session.scalar(select(func.count()).select_from(NoteOutbox)) == 1


def test_transitions_are_compare_and_set_and_audited(outbox_db: AppDatabase) -> None:
    """DWB-60: a move is a compare-and-set on (state, version), the claim of a note included: a writer holding an
    older version moves nothing (SQLite and PostgreSQL); each move commits with its audit event."""
    note, _ = enqueue_note(outbox_db, NOTE, actor="test")
    sending = transition(outbox_db, note, "sending", attempts=1)
    assert (sending.state, sending.version, sending.attempts) == ("sending", 2, 1)
    with pytest.raises(StaleNoteError):
        transition(outbox_db, note, "sending")  # a second writer holding the old version moves nothing
    written = transition(outbox_db, sending, "written", ehr_resource_id="doc-1")
    assert (written.state, written.version, written.ehr_resource_id) == ("written", 3, "doc-1")
    with outbox_db.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.outcome) for e in events] == [
        ("note.enqueue", "pending"),
        ("note.transition", "sending"),
        ("note.transition", "written"),
    ]
    assert all("Plan" not in repr(e.detail) for e in events)
