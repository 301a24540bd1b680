"""Keep an owed Provenance from falling due while a run is POSTing it (DWB-82).

An owed Provenance falls due ``stalled_after_s`` after it was last put off (``written``, or a later run's claim), and
the note sensor then asks for a run that sends it. A POST still alive may take longer than that: the transport waits
out each ``Retry-After`` of a throttle (up to 15 min, several times, even for a POST), so a later run would POST a
second Provenance beside it. As the note's own attempt does (``heartbeat``), the POSTing run beats instead of
bounding those waits: a daemon thread puts the due time off by ``stalled_after_s`` every quarter of it, on the note
at the version the run holds (only that column: no version, no audit event, so the run's own compare-and-set still
holds). Once another run moved the note (or it is owed no longer) the beat stops; a process that dies stops beating
with it, and its Provenance falls due ``stalled_after_s`` later as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from store import AppDatabase
from store.models import NoteOutbox, utcnow
from store.outbox import NoteRecord

__all__ = ["posting", "put_off"]

_log = logging.getLogger(__name__)
_MIN_INTERVAL_S = 0.05


def put_off(db: AppDatabase, note_id: str, version: int, grace_s: float) -> bool:
    """Set the note's Provenance due ``grace_s`` from now if it is still owed at ``version``; False otherwise."""
    with db.session() as session:
        moved = session.execute(
            update(NoteOutbox)
            .where(NoteOutbox.id == note_id, NoteOutbox.version == version, NoteOutbox.provenance_due_at.is_not(None))
            .values(provenance_due_at=utcnow() + timedelta(seconds=grace_s), updated_at=NoteOutbox.updated_at)
        )
        session.commit()
        return bool(moved.rowcount)  # type: ignore[attr-defined]


@contextlib.contextmanager
def posting(db: AppDatabase, note: NoteRecord, grace_s: float) -> Iterator[None]:
    """Put the note's owed Provenance off every ``grace_s / 4`` seconds until the block ends."""
    interval = max(grace_s / 4, _MIN_INTERVAL_S)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if not put_off(db, note.id, note.version, grace_s):
                    return  # another run moved it (a claim), or it is owed no longer: nothing of this run's to keep
            except SQLAlchemyError as exc:  # a busy database: the next beat tries again
                _log.warning("note %s: Provenance beat not recorded (%s)", note.id, type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"provenance-beat-{note.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
