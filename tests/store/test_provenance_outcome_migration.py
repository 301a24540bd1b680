"""Revision 0022 adds ``note_outbox.provenance_outcome`` (DWB-82: why a written note owes no Provenance, for the
notes API's ``ehrProvenance``) on SQLite and PostgreSQL: notes written before it read none (``unrecorded``) and keep
every value; the downgrade drops the column and keeps the notes, and the upgrade runs again."""

from __future__ import annotations

import sqlalchemy as sa

from store import AppDatabase
from store.models import NoteOutbox
from tests.store.test_doc_posted_migration import _NOTES, _note, _tenant_and_connection
from tests.store.test_outcome_issues_migration import _columns, _downgrade


def test_dwb82_0022_adds_provenance_outcome_none_recorded_and_downgrades_without_losing_notes(db_url: str) -> None:
    db = AppDatabase.from_url(db_url)
    db.migrate("0021")
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        for state in ("written", "pending"):
            conn.execute(sa.insert(_NOTES).values(**_note(state)))

    db.migrate()

    with db.session() as s:
        rows = [s.get(NoteOutbox, n) for n in ("written", "pending")]
        assert all(r is not None and r.body == "Plan: rest." for r in rows)
        assert [r.provenance_outcome for r in rows if r is not None] == [None, None]

    _downgrade(db, "0021")
    assert "provenance_outcome" not in set(_columns(db))
    with db.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(_NOTES.c.id, _NOTES.c.body)).all()) == [
            ("pending", "Plan: rest."),
            ("written", "Plan: rest."),
        ]
    db.migrate()
    assert "provenance_outcome" in set(_columns(db))
    db.dispose()
