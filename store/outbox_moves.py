"""Who is told of the versions this thread's outbox transitions move notes to (``store.outbox.transition``).

The write-back heartbeat keeps fresh only the claim its attempt holds: the note at the version the attempt last
moved it to (``engine.writeback.heartbeat``). Another run's moves are made in another thread or process, so only the
attempt's own reach its watcher. A watcher is told before the move commits: a beat that misses the version it read
can tell the attempt's own move (the version it follows changed meanwhile) from another run's; a move told and not
yet visible to the beat's session is told apart by reading the row back (``engine.writeback.heartbeat._missed``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["moving_to", "watching"]

Watcher = Callable[[str, int], None]
_watchers: ContextVar[tuple[Watcher, ...]] = ContextVar("outbox_watchers", default=())


@contextlib.contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Tell ``watcher(note_id, version)`` of every move this thread's transitions make while the block runs."""
    token = _watchers.set((*_watchers.get(), watcher))
    try:
        yield
    finally:
        _watchers.reset(token)


def moving_to(note_id: str, version: int) -> None:
    """Called by ``transition`` once its compare-and-set matched, before it commits."""
    for watcher in _watchers.get():
        watcher(note_id, version)
