"""Revision 0017 adds ``note_outbox.outcome_issues`` (a refused note's OperationOutcome issues, DWB-51) on SQLite and
PostgreSQL: notes written at 0016 keep every value and have none (SQL NULL, which the purge's ``IS NOT NULL`` test
relies on); a JSON record reads back as written; the downgrade drops the column and keeps the notes, and the
upgrade runs again."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from store import AppDatabase
from store.database import _MIGRATIONS
from store.models import NoteOutbox
from tests.store.test_doc_posted_migration import _NOTES, _note, _tenant_and_connection

RECORD = {"issues": [{"severity": "error", "code": "business-rule", "expression": [], "codings": [],
                      "diagnostics": "Jane Doe: note refused ✓", "truncated": False}], "omitted": 0}  # fmt: skip


def _columns(db: AppDatabase) -> set[str]:
    return {c["name"] for c in sa.inspect(db.engine).get_columns("note_outbox")}


def _downgrade(db: AppDatabase, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with db.migration_connection() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def assert_adds_note_columns(
    db_url: str, before: str, columns: set[str], read: Callable[[NoteOutbox], object], expected: object
) -> None:
    """The upgrade from ``before`` adds ``columns`` to notes written there (``written``, ``pending``), each note
    reading ``expected`` through ``read`` and keeping its body; the downgrade drops them and keeps the notes; the
    upgrade runs again."""
    db = AppDatabase.from_url(db_url)
    db.migrate(before)
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        for state in ("written", "pending"):
            conn.execute(sa.insert(_NOTES).values(**_note(state)))

    db.migrate()

    with db.session() as s:
        rows = [s.get(NoteOutbox, n) for n in ("written", "pending")]
        assert all(r is not None and r.body == "Plan: rest." for r in rows)
        assert [read(r) for r in rows if r is not None] == [expected, expected]

    _downgrade(db, before)
    assert not columns & _columns(db)
    with db.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(_NOTES.c.id, _NOTES.c.body)).all()) == [
            ("pending", "Plan: rest."),
            ("written", "Plan: rest."),
        ]
    db.migrate()
    assert columns <= _columns(db)
    db.dispose()


def test_dwb51_0017_adds_outcome_issues_and_downgrades_without_losing_notes(db_url: str) -> None:
    db = AppDatabase.from_url(db_url)
    db.migrate("0016")
    _tenant_and_connection(db)
    with db.engine.begin() as conn:
        conn.execute(sa.insert(_NOTES).values(**_note("failed")))

    db.migrate()

    assert "outcome_issues" in _columns(db)
    with db.engine.connect() as conn:  # SQL NULL, not a JSON 'null'
        assert conn.execute(sa.text("SELECT count(*) FROM note_outbox WHERE outcome_issues IS NULL")).scalar() == 1
    with db.session() as s:
        row = s.get(NoteOutbox, "failed")
        assert row is not None and row.outcome_issues is None and row.body == "Plan: rest."
        row.outcome_issues = RECORD
        s.commit()
    with db.session() as s:
        assert s.get(NoteOutbox, "failed").outcome_issues == RECORD  # type: ignore[union-attr]

    _downgrade(db, "0016")
    assert "outcome_issues" not in _columns(db)
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(_NOTES.c.body, _NOTES.c.state)).all() == [("Plan: rest.", "failed")]
    db.migrate()
    assert "outcome_issues" in _columns(db)
    db.dispose()
