"""Login states are deleted once no request can use them (``OAuthStateStore.purge_expired``), on SQLite and
PostgreSQL: an unused state once expired; a consumed one once its replay window (the state's time to live since it
was consumed, what ``recorded_outcome`` reads) is over, so a reload of the callback within it is still answered
from its recorded outcome. The DELETE runs on the ``expires_at`` index. ``purge_now_and_then`` (called as each
login starts) runs it at most once per ``purge_every`` per process, and a database failing it does not fail the
login."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from store import AppDatabase, OAuthStateStore, TokenCipher
from store.models import OAuthState
from store.states import CallbackOutcome, hash_secret
from tests.store.test_store_states import create


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _left(db: AppDatabase) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(OAuthState)) or 0)


def _there(db: AppDatabase, state: str) -> bool:
    with db.session() as session:
        return session.scalar(select(OAuthState.id).where(OAuthState.state_hash == hash_secret(state))) is not None


def test_a_consumed_state_is_kept_for_its_reload_until_the_replay_window_ends(
    db: AppDatabase, cipher: TokenCipher
) -> None:
    """A callback answered, the purge runs (a later login): the reload of that callback still gets its answer,
    up to ``ttl`` after it was consumed, even once the state itself has expired; after that the row is gone."""
    clock = Clock()
    store = OAuthStateStore(db, cipher, clock=clock)
    state = create(store)
    clock.now += timedelta(minutes=9)  # consumed just before it expires: its window ends 9 minutes past expiry
    consumed_at = clock.now
    store.consume(state, browser_session="browser-1", replay_key="code=c1")
    store.record_outcome(state, CallbackOutcome("connected", connection_id="conn-1"))
    for after in (timedelta(0), timedelta(minutes=2), timedelta(minutes=9, seconds=59)):  # the state expired at 1
        clock.now = consumed_at + after
        assert store.purge_expired() == 0
        recorded = store.recorded_outcome(state, browser_session="browser-1", replay_key="code=c1")
        assert recorded is not None and recorded.outcome.connection_id == "conn-1"
    clock.now = consumed_at + timedelta(minutes=10)  # the replay window is over
    assert store.recorded_outcome(state, browser_session="browser-1", replay_key="code=c1") is None
    assert store.purge_expired() == 1
    assert not _there(db, state)


def test_purge_deletes_expired_unused_and_used_past_their_window_and_keeps_the_rest(
    db: AppDatabase, cipher: TokenCipher
) -> None:
    clock = Clock()
    store = OAuthStateStore(db, cipher, clock=clock)
    abandoned = create(store)  # never used: gone once expired
    burnt = create(store)  # consumed from another browser: no outcome, gone once its window is over
    with pytest.raises(Exception, match="different browser"):
        store.consume(burnt, browser_session="attacker")
    clock.now += timedelta(minutes=4)
    answered = create(store)  # consumed and answered at minute 4: window until minute 14
    store.consume(answered, browser_session="browser-1")
    store.record_outcome(answered, CallbackOutcome("failed", error_code="access_denied", message="refused"))
    clock.now += timedelta(minutes=7)  # minute 11
    fresh = create(store)  # started now: unused, not expired
    assert store.purge_expired() == 2  # the abandoned one (expired at 10), the burnt one (window over at 10)
    assert [_there(db, s) for s in (abandoned, burnt, answered, fresh)] == [False, False, True, True]
    clock.now += timedelta(minutes=3)  # minute 14: the answered one's window is over
    assert store.purge_expired() == 1 and _there(db, fresh) and _left(db) == 1
    clock.now += timedelta(minutes=7)  # minute 21: the fresh one expired unused
    assert store.purge_expired() == 1 and _left(db) == 0


def test_purge_now_and_then_runs_once_per_interval_and_a_failing_database_does_not_raise(
    db: AppDatabase, cipher: TokenCipher
) -> None:
    clock = Clock()
    store = OAuthStateStore(db, cipher, clock=clock)
    create(store)
    clock.now += timedelta(minutes=11)
    assert store.purge_now_and_then() == 1
    create(store)
    clock.now += timedelta(minutes=11)
    assert store.purge_now_and_then() is None and _left(db) == 1  # purged moments ago: not due
    every_time = OAuthStateStore(db, cipher, clock=clock, purge_every=timedelta(0))
    assert every_time.purge_now_and_then() == 1 and _left(db) == 0
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE oauth_states"))  # a real failure of the database, not a stand-in
    assert every_time.purge_now_and_then() is None


def test_the_purge_delete_runs_on_the_expires_at_index(db: AppDatabase, cipher: TokenCipher) -> None:
    """The DELETE the store sends, explained by the database itself: an index scan of ``ix_oauth_states_expires_at``
    (on PostgreSQL with sequential scans off, as its planner would choose on a large table)."""
    store = OAuthStateStore(db, cipher)
    sent: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", keep)
    try:
        store.purge_expired()
    finally:
        event.remove(db.engine, "before_cursor_execute", keep)
    [(statement, parameters)] = sent
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        if db.dialect == "sqlite":
            plan = " ".join(str(row) for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters))
        else:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = " ".join(str(row) for row in cursor.fetchall())
        cursor.close()
    assert "ix_oauth_states_expires_at" in plan, plan
