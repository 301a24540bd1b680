"""Revision 0022 adds ``note_outbox.provenance_outcome`` (DWB-82: why a written note owes no Provenance, for the
notes API's ``ehrProvenance``) on SQLite and PostgreSQL: notes written before it read none (``unrecorded``) and keep
every value; the downgrade drops the column and keeps the notes, and the upgrade runs again."""

from __future__ import annotations

from tests.store.test_outcome_issues_migration import assert_adds_note_columns


def test_dwb82_0022_adds_provenance_outcome_none_recorded_and_downgrades_without_losing_notes(db_url: str) -> None:
    assert_adds_note_columns(db_url, "0021", {"provenance_outcome"}, lambda r: r.provenance_outcome, None)
