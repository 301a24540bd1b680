"""Revision 0020 adds ``note_outbox.provenance_due_at`` and ``provenance_tries`` (DWB-82: a Provenance owed by a
``written`` note, sent by a later run when the writing run died) on SQLite and PostgreSQL: notes written before it
read none owed and keep every value; the downgrade drops both columns and keeps the notes, and the upgrade runs
again."""

from __future__ import annotations

import sqlalchemy as sa

from store import AppDatabase
from store.models import NoteOutbox
from tests.store.test_doc_posted_migration import _NOTES, _note, _tenant_and_connection
from tests.store.test_outcome_issues_migration import _columns, _downgrade


def test_dwb82_0020_adds_provenance_due_none_owed_and_downgrades_without_losing_notes(db_url: str) -> None:
    db = AppDatabase.from_url(db_url)
    db.migrate("0019")
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        for state in ("written", "pending"):
            conn.execute(sa.insert(_NOTES).values(**_note(state)))

    db.migrate()

    with db.session() as s:
        rows = [s.get(NoteOutbox, n) for n in ("written", "pending")]
        assert all(r is not None and r.body == "Plan: rest." for r in rows)
        assert [(r.provenance_due_at, r.provenance_tries) for r in rows if r is not None] == [(None, 0), (None, 0)]

    _downgrade(db, "0019")
    assert not {"provenance_due_at", "provenance_tries"} & set(_columns(db))
    with db.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(_NOTES.c.id, _NOTES.c.body)).all()) == [
            ("pending", "Plan: rest."),
            ("written", "Plan: rest."),
        ]
    db.migrate()
    assert {"provenance_due_at", "provenance_tries"} <= set(_columns(db))
    db.dispose()
