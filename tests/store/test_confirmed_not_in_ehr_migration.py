"""Revision 0019 adds ``note_outbox.confirmed_not_in_ehr`` (DWB-63: a note a person confirmed absent is searched for
before a POST without If-None-Exist) on SQLite and PostgreSQL: a note written at 0018 with ``send_unconditional`` (a
confirmed retry in flight across the upgrade) reads true, so it keeps the search before its POST; every other note
reads false and keeps every value; the downgrade drops the column and keeps the notes, and the upgrade runs again."""

from __future__ import annotations

import sqlalchemy as sa

from store import AppDatabase
from store.models import NoteOutbox
from tests.store.test_doc_posted_migration import _NOTES, _note, _tenant_and_connection
from tests.store.test_outcome_issues_migration import _columns, _downgrade

_FLAGGED = sa.table("note_outbox", sa.column("id"), sa.column("send_unconditional"))


def test_dwb63_0019_adds_confirmed_not_in_ehr_from_send_unconditional_and_downgrades_without_losing_notes(
    db_url: str,
) -> None:
    db = AppDatabase.from_url(db_url)
    db.migrate("0018")
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        for state in ("pending", "unknown"):
            conn.execute(sa.insert(_NOTES).values(**_note(state)))
        conn.execute(sa.update(_FLAGGED).where(_FLAGGED.c.id == "pending").values(send_unconditional=True))

    db.migrate()

    with db.session() as s:
        rows = {n: s.get(NoteOutbox, n) for n in ("pending", "unknown")}
        assert all(r is not None and r.body == "Plan: rest." for r in rows.values())
        assert {n: r.confirmed_not_in_ehr for n, r in rows.items() if r is not None} == {
            "pending": True,
            "unknown": False,
        }

    _downgrade(db, "0018")
    assert "confirmed_not_in_ehr" not in _columns(db)
    with db.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(_NOTES.c.id, _NOTES.c.body)).all()) == [
            ("pending", "Plan: rest."),
            ("unknown", "Plan: rest."),
        ]
    db.migrate()
    assert "confirmed_not_in_ehr" in _columns(db)
    db.dispose()
