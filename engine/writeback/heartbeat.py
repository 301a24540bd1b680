"""Keep a live attempt from looking stalled: while a run sends a note, it refreshes the note's ``updated_at``.

The sensor resumes a note left in ``sending`` once its ``updated_at`` is ``stalled_after_s`` old (its run died,
``queue.due_runs``). A POST that is alive may take longer than that: the transport waits out each ``Retry-After``
(up to 15 min, several times), and every try may take up to the request deadline. Bounding those waits below
``stalled_after_s`` would tie two settings together and still break when either changes, so the attempt beats
instead: a daemon thread touches ``updated_at`` every quarter of ``stalled_after_s`` while the attempt runs (only
that column: no version, no audit event, so the attempt's own compare-and-set still holds). A process that dies
stops beating with it, and its note is resumed ``stalled_after_s`` later as before.

A beat touches only the attempt's own claim: the note in ``sending`` at the version the attempt claimed or resumed it
at, followed through the attempt's own moves (a Binary step, the ``doc_posted`` record: ``store.outbox_moves`` tells
the beat of them). Once another run moved the note (the sensor resumed it after this run's beats failed for a
while, a busy database), the beat stops: before, it touched any ``sending`` note, so it kept that other run's claim
fresh, and a note whose resuming run died was not resumed again until this run ended. A touch that matches nothing
is read back before the claim is taken for lost (``_missed``): the attempt's own move is told to the beat before it
commits, so on PostgreSQL a touch made meanwhile matches neither version (the beat went on only if it tried again),
and a move of its own out of ``sending`` (``written``, or ``unknown`` then a search in the same block; a
Provenance POST comes after the block) ends the beat quietly, as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from store import AppDatabase
from store.models import NoteOutbox, utcnow
from store.outbox import NoteRecord
from store.outbox_moves import watching

__all__ = ["Claim", "heartbeat", "touch_sending"]

_log = logging.getLogger(__name__)
_MIN_INTERVAL_S = 0.05


class Claim:
    """The note at the version its attempt last moved it to; ``lost`` is set once another run moved it."""

    def __init__(self, note: NoteRecord) -> None:
        self.note_id = note.id
        self.version = note.version
        self.lost = threading.Event()

    def follow(self, note_id: str, version: int) -> None:
        """One of the attempt's own moves (told before it commits, ``store.outbox_moves``)."""
        if note_id == self.note_id:
            self.version = version


def touch_sending(db: AppDatabase, note_id: str, version: int) -> bool:
    """Set ``updated_at`` of the note if it is still ``sending`` at ``version``; False otherwise."""
    with db.session() as session:
        moved = session.execute(
            update(NoteOutbox)
            .where(NoteOutbox.id == note_id, NoteOutbox.state == "sending", NoteOutbox.version == version)
            .values(updated_at=utcnow())
        )
        session.commit()
        return bool(moved.rowcount)  # type: ignore[attr-defined]


def _missed(db: AppDatabase, claim: Claim, tried: int) -> str:
    """Why a touch at version ``tried`` matched nothing, the row read back: ``own`` (the attempt's own move, made
    since or told and not committed yet: the next beat touches it), ``left`` (its own move took the note out of
    ``sending``) or ``lost`` (another run moved it past the claim)."""
    if claim.version != tried:
        return "own"
    with db.session() as session:
        row = session.execute(
            select(NoteOutbox.state, NoteOutbox.version).where(NoteOutbox.id == claim.note_id)
        ).one_or_none()
    if claim.version != tried:  # an own move committed between the touch and the read
        return "own"
    if row is None or row.version > tried:
        return "lost"
    if row.version < tried:  # told before its commit (``store.outbox_moves``), not visible yet
        return "own"
    return "own" if row.state == "sending" else "left"


@contextlib.contextmanager
def heartbeat(db: AppDatabase, note: NoteRecord, stalled_after_s: float) -> Iterator[Claim]:
    """Touch the note every ``stalled_after_s / 4`` seconds until the block ends or the claim is no longer the
    attempt's (the note left ``sending``, or another run moved it)."""
    interval = max(stalled_after_s / 4, _MIN_INTERVAL_S)
    claim = Claim(note)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            version = claim.version
            try:
                missed = None if touch_sending(db, note.id, version) else _missed(db, claim, version)
                if missed == "left":  # its own move took the note out of ``sending``: nothing left to keep fresh
                    return
                if missed == "lost":
                    _log.warning("note %s: another run took it over; this run no longer keeps it fresh", note.id)
                    claim.lost.set()
                    return
            except SQLAlchemyError as exc:  # a busy database: the next beat tries again
                _log.warning("note %s: heartbeat not recorded (%s)", note.id, type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"note-heartbeat-{note.id}", daemon=True)
    with watching(claim.follow):
        thread.start()
        try:
            yield claim
        finally:
            stop.set()
            thread.join()
