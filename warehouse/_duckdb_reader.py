"""A DuckDB read: the warehouse file attached read-only to an in-memory database kept open by the thread.

Opening a DuckDB file builds a whole database instance, about 14 ms of CPU each time; attaching the file to an
instance already open costs under 1 ms. A per-connection sync run reads the warehouse once per type for its
duplicate-keys checks, so that opening was about a sixth of the run's CPU (docs/PERFORMANCE.md). The file is
detached after every read, so DuckDB's lock on it is held exactly as long as before, and the read sees the file
as a plain read-only connection does (the same catalog name as the writer's, UTC, no progress bar, the
warehouse's memory limit, threads and temporary directory).

Each thread keeps at most one idle instance (the last one it read through): a nested read, or a read of another
file or configuration, opens its own. A read that raises closes its instance instead of keeping it, so no state
of a failed statement is carried into the next read; a forked child never uses its parent's instance.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import duckdb

from warehouse._duckdb_io import WRITER_CATALOG, configured, execute_or_close, path_literal, when_unlocked

__all__ = ["read_attached"]

_BASE_CATALOG = "memory"  # an in-memory database's own catalog, the default again before the detach


class _Idle(threading.local):
    """This thread's idle instance and what it was opened with (key: its configuration), and the process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.key: tuple[tuple[str, str], ...] | None = None
        self.conn: duckdb.DuckDBPyConnection | None = None


_idle = _Idle()


def _take(key: tuple[tuple[str, str], ...]) -> duckdb.DuckDBPyConnection | None:
    """This thread's idle instance when it was opened with ``key`` (it is then in use until given back)."""
    if _idle.pid != os.getpid():  # forked: the parent's instance is not this process's to use or close
        _idle.pid, _idle.key, _idle.conn = os.getpid(), None, None
    if _idle.conn is None or _idle.key != key:
        return None
    conn, _idle.conn, _idle.key = _idle.conn, None, None
    return conn


def _give_back(key: tuple[tuple[str, str], ...], conn: duckdb.DuckDBPyConnection) -> None:
    """Keep ``conn`` as this thread's idle instance, closing the one it replaces."""
    if _idle.conn is not None:
        _idle.conn.close()
    _idle.key, _idle.conn = key, conn


def _attach(conn: duckdb.DuckDBPyConnection, path: Path) -> None:
    conn.execute(f"ATTACH {path_literal(path)} AS {WRITER_CATALOG} (READ_ONLY)")


@contextlib.contextmanager
def read_attached(
    path: Path, config: dict[str, str], *, timeout_s: float, log_every_s: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection reading ``path`` (read-only) for the block; DuckDB's lock on the file is let go after it.

    A lock another process holds outside ehrsync's lock file is waited for as ``_duckdb_io.connect`` waits."""
    # A plain connection to ``path`` spills to ``<path>.tmp``; an in-memory one would spill to the working folder.
    settings: dict[str, str | bool | int | float | list[str]] = {"temp_directory": f"{path}.tmp", **config}
    key = tuple(sorted((k, str(v)) for k, v in settings.items()))
    conn = _take(key)
    if conn is None:
        conn = configured(duckdb.connect(":memory:", config=settings))
    try:
        when_unlocked(path, partial(_attach, conn, path), timeout_s, log_every_s)
    except BaseException:
        conn.close()
        raise
    try:
        conn.execute(f"USE {WRITER_CATALOG}")
        yield conn
    except BaseException:
        conn.close()  # the file is let go with the instance
        raise
    _give_back(key, execute_or_close(conn, f"USE {_BASE_CATALOG}", f"DETACH {WRITER_CATALOG}"))
