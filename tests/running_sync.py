"""A running sync, as tests need one: another thread holding a connection's lock for the length of a block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.connection_lock import connection_lock


@contextmanager
def sync_holding_the_lock(root: Path, connection_id: str, owner: str = "a-running-sync") -> Iterator[None]:
    """Hold ``connection_id``'s lock (under the landing ``root``, named ``owner``) in another thread from before the
    block starts until it ends, as a sync in progress would; at most 10 minutes, so a failing test cannot hang."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with connection_lock(root, connection_id, owner):
            held.set()
            release.wait(600)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        holder.join(10)
