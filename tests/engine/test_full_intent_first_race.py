"""Two first ``begin_full``s of a connection at once (BDX-28): neither finds the connection's full-run marker row, so
both make it. On PostgreSQL the second's plain INSERT waited for the first's commit and then failed on the primary
key (the run-status sensor's record of a failed full run, or the full run itself, failed with an IntegrityError).
Now the row is made with INSERT ... ON CONFLICT DO NOTHING and then read and locked: the second waits for the
first's commit, then merges its intent into the row the first made. SQLite serializes the two (BEGIN IMMEDIATE)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine import cursors
from store import AppDatabase

CONN = "c-first-full"


@pytest.fixture(params=["sqlite", "postgres"])
def app_db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[AppDatabase]:
    url = f"sqlite:///{tmp_path / 'app.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = AppDatabase.from_url(url)
    db.migrate()
    yield db
    db.dispose()


def _lock_waiters(db: AppDatabase) -> int:
    """PostgreSQL backends of this database waiting on a lock (the second ``begin_full``, once it waits)."""
    with db.engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return int(conn.exec_driver_sql(query).scalar_one())


def test_bdx28_two_first_begin_fulls_at_once_both_record_their_intent(app_db: AppDatabase) -> None:
    """The first ``begin_full`` is held after it wrote the marker row, before its commit (a flush hook on its own
    thread), while the second runs in another transaction: it must wait, then record its own intent, keeping the
    first's types owed."""
    db = app_db
    first_thread: list[threading.Thread] = []
    flushed, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_first(_session: Session, _context: Any) -> None:
        if first_thread and threading.current_thread() is first_thread[0] and not flushed.is_set():
            flushed.set()
            release.wait(60)

    def run(run_id: str, types: list[str]) -> None:
        try:
            assert cursors.begin_full(db, CONN, run_id, types)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    first = threading.Thread(target=run, args=("first-run", ["Condition"]))
    second = threading.Thread(target=run, args=("second-run", ["Observation"]))
    first_thread.append(first)
    sa.event.listen(Session, "after_flush", hold_first)
    try:
        first.start()
        assert flushed.wait(30), errors
        second.start()
        if db.dialect == "postgresql":  # the second transaction is under way and waits on the first's row
            deadline = time.monotonic() + 60
            while _lock_waiters(db) == 0 and second.is_alive():
                assert time.monotonic() < deadline, "the second begin_full never reached the marker row"
                time.sleep(0.05)
    finally:
        release.set()
        first.join(60)
        second.join(60)
        sa.event.remove(Session, "after_flush", hold_first)
    assert not errors, errors
    assert cursors.owes_full(db, CONN, "Condition") and cursors.owes_full(db, CONN, "Observation")
