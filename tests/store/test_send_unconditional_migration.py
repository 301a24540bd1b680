"""Revision 0018 adds ``note_outbox.send_unconditional`` (DWB-31/63: a person's confirmed retry where the EHR's
If-None-Exist ignores the identifier) on SQLite and PostgreSQL: notes written at 0017 keep every value and read false
(a retry in flight before the upgrade is never sent without If-None-Exist); the downgrade drops the column and keeps
the notes, and the upgrade runs again."""

from __future__ import annotations

import sqlalchemy as sa

from store import AppDatabase
from store.models import NoteOutbox
from tests.store.test_doc_posted_migration import _NOTES, _note, _tenant_and_connection
from tests.store.test_outcome_issues_migration import _columns, _downgrade


def test_dwb63_0018_adds_send_unconditional_false_and_downgrades_without_losing_notes(db_url: str) -> None:
    db = AppDatabase.from_url(db_url)
    db.migrate("0017")
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        for state in ("pending", "unknown"):
            conn.execute(sa.insert(_NOTES).values(**_note(state)))

    db.migrate()

    with db.session() as s:
        rows = {n: s.get(NoteOutbox, n) for n in ("pending", "unknown")}
        assert all(r is not None and r.send_unconditional is False and r.body == "Plan: rest." for r in rows.values())
        rows["pending"].send_unconditional = True  # type: ignore[union-attr]
        s.commit()
    with db.session() as s:
        assert s.get(NoteOutbox, "pending").send_unconditional is True  # type: ignore[union-attr]

    _downgrade(db, "0017")
    assert "send_unconditional" not in _columns(db)
    with db.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(_NOTES.c.id, _NOTES.c.body)).all()) == [
            ("pending", "Plan: rest."),
            ("unknown", "Plan: rest."),
        ]
    db.migrate()
    assert "send_unconditional" in _columns(db)
    db.dispose()
