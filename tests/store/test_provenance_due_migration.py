"""Revision 0020 adds ``note_outbox.provenance_due_at`` and ``provenance_tries`` (DWB-82: a Provenance owed by a
``written`` note, sent by a later run when the writing run died) on SQLite and PostgreSQL: notes written before it
read none owed and keep every value; the downgrade drops both columns and keeps the notes, and the upgrade runs
again."""

from __future__ import annotations

from tests.store.test_outcome_issues_migration import assert_adds_note_columns


def test_dwb82_0020_adds_provenance_due_none_owed_and_downgrades_without_losing_notes(db_url: str) -> None:
    assert_adds_note_columns(
        db_url,
        "0019",
        {"provenance_due_at", "provenance_tries"},
        lambda r: (r.provenance_due_at, r.provenance_tries),
        (None, 0),
    )
