"""``sync_runs`` is read by ``not_before`` every hour (``engine.retries.holds_ended``: which connections' source holds
ended in the hour, for the weekly reconcile's slots), and the table grows with every run ever made: the read must
seek an index, not scan the table. Revision 0014 adds it, on SQLite and PostgreSQL; on SQLite the plan of the very
statement ``holds_ended`` sends is checked (EXPLAIN QUERY PLAN), not its timing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from engine.retries import holds_ended
from store import AppDatabase

_INDEX = "ix_sync_runs_not_before"


@pytest.fixture
def migrated(db_url: str) -> Iterator[AppDatabase]:
    """A new app database migrated to head by its own migrations (not a copied template)."""
    database = AppDatabase.from_url(db_url)
    database.migrate()
    yield database
    database.dispose()


def test_migrate_adds_the_not_before_index_on_both_backends(migrated: AppDatabase) -> None:
    indexes = {ix["name"]: ix for ix in sa.inspect(migrated.engine).get_indexes("sync_runs")}
    assert _INDEX in indexes, sorted(indexes)
    assert indexes[_INDEX]["column_names"][0] == "not_before", indexes[_INDEX]


def _statement_of_holds_ended(db: AppDatabase) -> tuple[str, Any]:
    """The SQL and parameters ``holds_ended`` sends (caught on the engine, so the check follows the query)."""
    sent: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", catch)
    try:
        tick = datetime(2026, 3, 1, 12, tzinfo=UTC)
        holds_ended(db, tick - timedelta(hours=1), tick)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", catch)
    selects = [s for s in sent if "not_before" in s[0]]
    assert len(selects) == 1, sent
    return selects[0]


def test_holds_ended_seeks_the_index_on_sqlite(tmp_path: Any) -> None:
    db = AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        db.migrate()
        statement, parameters = _statement_of_holds_ended(db)
        with db.engine.connect() as conn:
            plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        assert any(_INDEX in step and "SCAN" not in step for step in plan), plan  # SEARCH ... USING ... INDEX
        assert not any(step.startswith("SCAN") and "sync_runs" in step for step in plan), plan
    finally:
        db.dispose()
