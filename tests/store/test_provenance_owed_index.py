"""The note sensor reads the owed Provenances every tick (``store.outbox_queue.provenance_owed``, DWB-82), and the
outbox keeps every ``written`` note ever made: the read must seek the few owing one (revision 0021's partial index
on ``provenance_due_at``), not go through every written note as the ``state, next_attempt_at`` index would. On SQLite
the plan of the very statement ``provenance_owed`` sends is checked (EXPLAIN QUERY PLAN), not its timing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from store import AppDatabase
from store.models import utcnow
from store.outbox_queue import provenance_owed
from tests.store.test_outcome_issues_migration import _downgrade
from tests.store.test_sync_run_indexes import migrated  # noqa: F401  (fixture)

_INDEX = "ix_note_outbox_provenance_due"


def test_dwb82_migrate_adds_the_provenance_due_index_on_both_backends(migrated: AppDatabase) -> None:  # noqa: F811
    indexes = {ix["name"]: ix for ix in sa.inspect(migrated.engine).get_indexes("note_outbox")}
    assert _INDEX in indexes, sorted(indexes)
    assert indexes[_INDEX]["column_names"] == ["state", "provenance_due_at"], indexes[_INDEX]
    _downgrade(migrated, "0020")  # and back
    assert _INDEX not in {ix["name"] for ix in sa.inspect(migrated.engine).get_indexes("note_outbox")}


def test_dwb82_provenance_owed_seeks_the_index_on_sqlite(tmp_path: Any) -> None:
    db = AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}")
    sent: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    try:
        db.migrate()
        sa.event.listen(db.engine, "before_cursor_execute", catch)
        provenance_owed(db, utcnow())
        sa.event.remove(db.engine, "before_cursor_execute", catch)
        [(statement, parameters)] = [s for s in sent if "provenance_due_at <=" in s[0]]
        with db.engine.connect() as conn:
            plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        assert any(_INDEX in step and not step.startswith("SCAN") for step in plan), plan
        assert not any(step.startswith("SCAN") and "note_outbox" in step for step in plan), plan
    finally:
        db.dispose()
