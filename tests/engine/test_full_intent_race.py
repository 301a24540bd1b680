"""A full run's intent recorded while another run of the connection upserts (BDX-28, PostgreSQL row locks).

The run-status sensor records a full run that failed before its steps (``record_unstarted_failure``: typically the
connection's lock was held, by the very run still syncing) without the connection's lock: ``begin_full`` locks the
full-run marker row, then the types' cursor rows. An upsert's ``cursors.advance`` locks its type's cursor row and
spends the marker's owed search: taken in the other order, the two waited on each other and PostgreSQL aborted one
with a deadlock (the upsert's step failed, or the failed full run's intent was never recorded).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import httpx
import pytest

from engine import cursors
from sandbox import SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient

MARK = datetime(2024, 5, 1, tzinfo=UTC)
LATER = datetime(2024, 6, 1, tzinfo=UTC)
WAIT_S = 5.0  # how long the upsert lets the other transaction run first: past PostgreSQL's 1 s deadlock_timeout


def test_bdx28_an_intent_recorded_during_an_upsert_does_not_deadlock_it(
    slot_world: SyncWorld, shared_sb: SandboxServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = slot_world.env.db
    conn = connect_patient(slot_world, shared_sb, http=http)
    cursors.begin_full(db, conn, "earlier-full-run", ["Observation"])  # the connection's marker row exists
    with db.locked_session() as session:  # Observation synced in full since: its cursor row exists too
        cursors.advance(session, conn, cursors.REST_STREAM, "Observation", "first-run", MARK)
        session.commit()
    original = cursors._spend
    reached, recorded = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def spend_after_the_intent(session, connection_id, resource_type):  # type: ignore[no-untyped-def]
        reached.set()
        recorded.wait(WAIT_S)  # the other transaction runs (or blocks on this one) meanwhile
        original(session, connection_id, resource_type)

    monkeypatch.setattr(cursors, "_spend", spend_after_the_intent)

    def upsert() -> None:
        try:
            with db.locked_session() as session:
                cursors.advance(session, conn, cursors.REST_STREAM, "Observation", "sync-run", LATER)
                session.commit()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def record_intent() -> None:
        try:
            cursors.begin_full(db, conn, "failed-full-run", ["Observation"])
        except BaseException as exc:
            errors.append(exc)
        finally:
            recorded.set()

    upserting = threading.Thread(target=upsert)
    upserting.start()
    assert reached.wait(30)
    recording = threading.Thread(target=record_intent)
    recording.start()
    upserting.join(60)
    recording.join(60)
    assert not errors, errors
    assert cursors.owes_full(db, conn, "Observation") == (cursors.get_mark(db, conn, "rest", "Observation") is None)
