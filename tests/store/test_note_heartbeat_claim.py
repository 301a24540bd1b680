"""The write-back heartbeat keeps fresh only its own attempt's claim, on SQLite and PostgreSQL: the note at the
version the attempt claimed it at, followed through the attempt's own moves; once another run moved the note (the
sensor resumed it after this run's beats failed), the beat stops, so a resuming run that dies is resumed again."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, update

from engine.writeback.heartbeat import heartbeat
from store import AppDatabase
from store.models import NoteOutbox, utcnow
from store.outbox import NoteRecord, enqueue_note, get_note, transition
from store.outbox_moves import watching
from store.outbox_queue import stalled_notes
from tests.store.conftest import NOTE, add_connection

_LONG_AGO = timedelta(hours=1)


@pytest.fixture
def outbox_db(db: AppDatabase) -> AppDatabase:
    add_connection(db, fhir_base="https://ehr.example/fhir")
    return db


def _age(db: AppDatabase, note_id: str) -> datetime:
    """The note unmoved for an hour (a run that died long ago); returns that time."""
    then = utcnow() - _LONG_AGO
    with db.session() as session:
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note_id).values(updated_at=then))
        session.commit()
    return then


def _updated_at(db: AppDatabase, note_id: str) -> datetime:
    note = get_note(db, note_id)
    assert note is not None
    return note.updated_at


def _wait_fresh(db: AppDatabase, note_id: str, deadline_s: float = 30.0) -> None:
    """Poll until a beat has touched the note (the aged time is an hour back: any touch is far newer)."""
    end = time.monotonic() + deadline_s
    while _updated_at(db, note_id).replace(tzinfo=None) < (utcnow() - _LONG_AGO / 2).replace(tzinfo=None):
        assert time.monotonic() < end, "the heartbeat never touched its own claim"
        time.sleep(0.02)


def _as_other_run(move: NoteRecord, db: AppDatabase) -> NoteRecord:
    """Another run's move: made in another thread, as a resuming run's is made in its own process."""
    out: dict[str, NoteRecord] = {}
    thread = threading.Thread(target=lambda: out.update(moved=transition(db, move, "sending", doc_posted=True)))
    thread.start()
    thread.join()
    return out["moved"]


def test_a_beat_follows_its_own_moves_and_stops_once_another_run_took_the_note(outbox_db: AppDatabase) -> None:
    """DWB-60: the claim's lease is renewed by its own run only; another run's claim is left to lapse."""
    note, _ = enqueue_note(outbox_db, NOTE, actor="test")
    claimed = transition(outbox_db, note, "sending", attempts=1, doc_posted=False)
    with heartbeat(outbox_db, claimed, stalled_after_s=0.2) as claim:  # beats every 0.05 s
        own = transition(outbox_db, claimed, "sending", doc_posted=True)  # the attempt's own move (its thread)
        _age(outbox_db, note.id)
        _wait_fresh(outbox_db, note.id)  # still its claim at the new version: kept fresh
        _as_other_run(own, outbox_db)  # the sensor resumed it in another run, which moved it (then died)
        aged = _age(outbox_db, note.id)
        assert claim.lost.wait(30), "the beat went on touching another run's claim"
    assert _updated_at(outbox_db, note.id).replace(tzinfo=None) == aged.replace(tzinfo=None)
    stalled = stalled_notes(outbox_db, utcnow() - _LONG_AGO / 2)
    assert [n.id for n in stalled] == [note.id]  # the dead run's note is resumed again, not kept fresh by this run


def test_a_beat_ends_quietly_once_its_own_run_moved_the_note_out_of_sending(
    outbox_db: AppDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """The attempt's own move out of ``sending`` (``written``, then the Provenance POST or a search still inside the
    beating block) ends the beat as before: no claim lost, no warning that another run took the note over (found in
    review: every such note logged one, naming a takeover that never happened)."""
    note, _ = enqueue_note(outbox_db, NOTE, actor="test")
    claimed = transition(outbox_db, note, "sending", attempts=1, doc_posted=True)
    beating = heartbeat(outbox_db, claimed, stalled_after_s=0.2)  # beats every 0.05 s
    with caplog.at_level("WARNING", logger="engine.writeback.heartbeat"), beating as claim:
        transition(outbox_db, claimed, "written", ehr_resource_id="doc-1")  # the attempt's own move, its thread
        end = time.monotonic() + 30
        while any(t.name == f"note-heartbeat-{note.id}" for t in threading.enumerate()):
            assert time.monotonic() < end, "the beat went on after its own run wrote the note"
            time.sleep(0.02)
        assert not claim.lost.is_set()
    assert [r.getMessage() for r in caplog.records if "took it over" in r.getMessage()] == []


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite serializes writers: the touch waits
def test_a_beat_landing_while_its_own_move_commits_keeps_beating(outbox_db: AppDatabase) -> None:
    """A touch made while the attempt's own move is between its compare-and-set and its commit (told to the beat,
    not yet visible) matches nothing: that is no other run's move, and the beat goes on at the new version. Found in
    review: on PostgreSQL the beat stopped for good, so a live run's note looked stalled ``stalled_after_s`` later and
    another run resumed it while this one was still sending it. SQLite serializes writers: there the touch waits for
    the commit."""
    touches: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("UPDATE note_outbox SET updated_at="):  # a beat's touch, done (nothing matched or not)
            touches.append(statement)

    note, _ = enqueue_note(outbox_db, NOTE, actor="test")
    claimed = transition(outbox_db, note, "sending", attempts=1, doc_posted=False)
    event.listen(outbox_db.engine, "after_cursor_execute", count)
    try:
        with heartbeat(outbox_db, claimed, stalled_after_s=0.2) as claim:  # beats every 0.05 s

            def hold(_note_id: str, _version: int) -> None:
                """The move told, not committed: two beats land meanwhile (or the claim is taken for lost)."""
                seen, end = len(touches), time.monotonic() + 30
                while len(touches) < seen + 2 and not claim.lost.is_set():
                    assert time.monotonic() < end, "no beat while the move was held"
                    time.sleep(0.01)

            with watching(hold):
                transition(outbox_db, claimed, "sending", doc_posted=True)  # the attempt's own move
            assert not claim.lost.is_set(), "the beat took its own run's move for another run's"
            _age(outbox_db, note.id)
            _wait_fresh(outbox_db, note.id)  # still its claim at the new version: kept fresh
    finally:
        event.remove(outbox_db.engine, "after_cursor_execute", count)
