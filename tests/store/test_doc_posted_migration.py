"""Revision 0016 upgrades a database written at 0015, on SQLite and PostgreSQL: a note left in ``sending`` by a run
from before it may have been POSTed (nothing recorded whether it was), so it is marked ``doc_posted`` and still goes
to the identifier search; every other note is not."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from store import AppDatabase
from store.models import Connection, NoteOutbox, Tenant

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_NOTE_COLUMNS = (
    "id tenant_id connection_id idempotency_key request_hash draft_id patient_id loinc_code title content_type body "
    "body_bytes produced_by doc_status clinician_approved state version attempts next_attempt_at created_at updated_at"
)
_NOTES = sa.table("note_outbox", *(sa.column(c) for c in _NOTE_COLUMNS.split()))


def _note(state: str) -> dict[str, object]:
    return {
        "id": state, "tenant_id": "t1", "connection_id": "c1", "idempotency_key": state, "request_hash": "h" * 64,
        "draft_id": f"d-{state}", "patient_id": "p1", "loinc_code": "11506-3", "title": "Visit",
        "content_type": "text/plain; charset=utf-8", "body": "Plan: rest.", "body_bytes": 11,
        "produced_by": "scribe v3", "doc_status": "preliminary", "clinician_approved": False, "state": state,
        "version": 2, "attempts": 1, "next_attempt_at": AT, "created_at": AT, "updated_at": AT,
    }  # fmt: skip


def test_0016_marks_notes_left_sending_as_maybe_posted(db_url: str) -> None:
    db = AppDatabase.from_url(db_url)
    db.migrate("0015")
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        for state in ("pending", "sending", "unknown", "written"):
            conn.execute(sa.insert(_NOTES).values(**_note(state)))

    db.migrate()

    with db.session() as s:
        posted = {row.state: row.doc_posted for row in s.scalars(sa.select(NoteOutbox))}
    assert posted == {"pending": False, "sending": True, "unknown": False, "written": False}
    db.dispose()


def _tenant_and_connection(db: AppDatabase) -> None:
    """The tenant and connection the notes belong to (tables later revisions leave alone), as the head models write
    them."""
    with db.session() as s:
        s.add(Tenant(id="t1", name="T"))
        s.flush()
        s.add(
            Connection(
                id="c1",
                tenant_id="t1",
                provider_id="generic",
                kind="patient",
                fhir_base="https://e/fhir",
                client_id="c",
            )
        )
        s.commit()
