"""The SQLite app database keeps a few connections open for reuse, never past their process or their file.

A new connection per session (open, four PRAGMAs, a WAL checkpoint at the last close) was ~8% of a sync's CPU.
Pooling them brings three hazards a connection per session never had, each guarded here:

- **fork**: SQLite forbids using (or closing) a connection in a child forked after it was opened. A child gets an
  empty pool at fork, as every engine does (``store._engines``); here, a checkout in another process than the
  connection's opener sets it aside unclosed and opens a new one (a fork from C code runs no at-fork hook).
- **the file replaced or deleted** (``ehrsync demo`` deletes its state folder; a test copies a database in): an
  idle connection still holds the old file, and a write through it would be lost unseen. Every checkout compares
  the device and inode at the path SQLite opened (``PRAGMA database_list``: absolute, also for a ``file:`` URI
  URL) with those the connection opened; on a difference the pool's connections are
  closed (SQLite skips the WAL checkpoint and deletion for a file that moved, so the new file's WAL is untouched)
  and a new one is opened.
- **other processes**: the pool rolls back a connection as it returns (SQLAlchemy's reset on return), so an idle
  one holds no transaction, snapshot or lock that would block another process's write or checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

from store._engines import set_aside_inherited

__all__ = ["SQLITE_POOL_SIZE", "guard_sqlite_pool"]

# Idle connections a process keeps per app database; more sessions at once open more (closed on return).
SQLITE_POOL_SIZE = 5
_OPENED_BY = "ehrsync_opened_by"


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        found = Path(path).stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def guard_sqlite_pool(engine: Engine) -> None:
    """Refuse, at checkout, a pooled connection of another process or of a file no longer where it opened it."""

    @event.listens_for(engine, "connect")
    def _note_opener(dbapi_connection: Any, record: Any) -> None:
        # The file SQLite opened, as it resolved it: the URL's path may be relative or a ``file:`` URI.
        path = next(row[2] for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main")
        record.info[_OPENED_BY] = (os.getpid(), path, _file_identity(path))

    @event.listens_for(engine, "checkout")
    def _check_opener(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        pid, path, identity = record.info.get(_OPENED_BY, (None, "", None))
        if pid != os.getpid():
            set_aside_inherited(dbapi_connection)
            record.dbapi_connection = proxy.dbapi_connection = None  # dropped unclosed: the parent's to close
            raise DisconnectionError("a pooled SQLite connection of another process")
        if identity is None or identity != _file_identity(path):
            error = DisconnectionError("the SQLite app database file was replaced or deleted")
            error.invalidate_pool = True  # every idle connection holds the old file
            raise error
