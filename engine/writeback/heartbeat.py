"""Keep a live attempt from looking stalled: while a run sends a note, it refreshes the note's ``updated_at``.

The sensor resumes a note left in ``sending`` once its ``updated_at`` is ``stalled_after_s`` old (its run died,
``queue.due_runs``). A POST that is alive may take longer than that: the transport waits out each ``Retry-After``
(up to 15 min, several times), and every try may take up to the request deadline. Bounding those waits below
``stalled_after_s`` would tie two settings together and still break when either changes, so the attempt beats
instead: a daemon thread touches ``updated_at`` every quarter of ``stalled_after_s`` while the attempt runs (only
that column: no version, no audit event, so the attempt's own compare-and-set still holds). A process that dies
stops beating with it, and its note is resumed ``stalled_after_s`` later as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from store import AppDatabase
from store.models import NoteOutbox, utcnow

__all__ = ["heartbeat", "touch_sending"]

_log = logging.getLogger(__name__)
_MIN_INTERVAL_S = 0.05


def touch_sending(db: AppDatabase, note_id: str) -> bool:
    """Set ``updated_at`` of the note if it is still ``sending``; False once it has left that state."""
    with db.session() as session:
        moved = session.execute(
            update(NoteOutbox)
            .where(NoteOutbox.id == note_id, NoteOutbox.state == "sending")
            .values(updated_at=utcnow())
        )
        session.commit()
        return bool(moved.rowcount)  # type: ignore[attr-defined]


@contextlib.contextmanager
def heartbeat(db: AppDatabase, note_id: str, stalled_after_s: float) -> Iterator[None]:
    """Touch the note every ``stalled_after_s / 4`` seconds until the block ends or the note leaves ``sending``."""
    interval = max(stalled_after_s / 4, _MIN_INTERVAL_S)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if not touch_sending(db, note_id):
                    return
            except SQLAlchemyError as exc:  # a busy database: the next beat tries again
                _log.warning("note %s: heartbeat not recorded (%s)", note_id, type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"note-heartbeat-{note_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
