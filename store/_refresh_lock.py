"""SQLite only: an exclusive ``flock`` per connection beside the database file serializes token refreshes."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

from connectors.errors import EhrSyncError
from connectors.filelock import LockWait, release_flock, take_flock
from store.database import AppDatabase

__all__ = ["REFRESH_LOCK_TIMEOUT_S", "RefreshLockTimeoutError", "sqlite_refresh_lock"]

REFRESH_LOCK_TIMEOUT_S = 300.0


class RefreshLockTimeoutError(EhrSyncError):
    """Another process held this connection's refresh lock for longer than a refresh can take."""

    code = "refresh_lock_timeout"


@contextlib.contextmanager
def sqlite_refresh_lock(db: AppDatabase, connection_id: str, *, timeout_s: float | None = None) -> Iterator[None]:
    """An exclusive ``flock`` per connection beside the SQLite file (every process that can open the database
    file can open this); waits up to ``timeout_s`` (default ``REFRESH_LOCK_TIMEOUT_S``; 0: one try,
    ``RefreshLockTimeoutError`` when it is held)."""
    if timeout_s is None:
        timeout_s = REFRESH_LOCK_TIMEOUT_S
    database = db.sqlite_file
    assert database is not None, "a SQLite app database is always a file (AppDatabase.from_url)"
    folder = database.with_name(database.name + ".refresh-locks")
    folder.mkdir(exist_ok=True)
    name = hashlib.sha256(connection_id.encode()).hexdigest()[:32]
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not take_flock(fd, exclusive=True, wait=LockWait(timeout_s, 0.02, 0.02)):
            raise RefreshLockTimeoutError(
                f"connection {connection_id}: another process has been refreshing its token for over {timeout_s:.0f}s"
            )
        try:
            yield
        finally:
            release_flock(fd)
    finally:
        os.close(fd)
