"""A DuckDB read: the warehouse file attached read-only to an in-memory database kept open between reads.

Opening a DuckDB file builds a whole database instance, about 14 ms of CPU each time; attaching the file to an
instance already open costs under 1 ms. A per-connection sync run reads the warehouse once per type for its
duplicate-keys checks, so that opening was about a sixth of the run's CPU (docs/PERFORMANCE.md). The file is
detached after every read, so DuckDB's lock on it is held exactly as long as before, and the read sees the file
as a plain read-only connection does (the same catalog name as the writer's, UTC, no progress bar, the
warehouse's memory limit, threads and temporary directory).

The process keeps at most ``MAX_IDLE`` idle instances, whichever thread read through them: each holds DuckDB's
worker and I/O threads (9 with ``threads=2``) and a few MB, so one per thread of a pool (the auth service's 40)
kept hundreds of threads and 150 MB. A read takes an idle one opened with its configuration, or opens its own (a
nested read, concurrent reads); a read that raises closes its instance instead of giving it back, so no state of
a failed statement is carried into the next read. At most ``MAX_IDLE`` such instances read at once: past them a
read opens the file as a plain read-only connection, as every read did before, and DuckDB's instance cache lets
concurrent readers of one file share that one database (its memory limit, its threads) instead of each opening
its own with a limit of its own. Every idle instance is closed before the process forks: the
child's copy has none of DuckDB's threads, and destroying it there crashed the child (SIGSEGV).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import duckdb

from warehouse._duckdb_io import WRITER_CATALOG, configured, connect, execute_or_close, path_literal, when_unlocked

__all__ = ["MAX_IDLE", "read_attached"]

MAX_IDLE = 2  # two files or configurations read in turn each keep theirs
_BASE_CATALOG = "memory"  # an in-memory database's own catalog, the default again before the detach
_Key = tuple[tuple[str, str], ...]  # the configuration an instance was opened with
_lock = threading.Lock()
_idle: list[tuple[_Key, duckdb.DuckDBPyConnection]] = []  # oldest first
_reading = [0]  # in-memory instances reading now (taken or opened, not yet given back or closed)


def _take(key: _Key, settings: dict[str, str | bool | int | float | list[str]]) -> duckdb.DuckDBPyConnection | None:
    """An idle instance opened with ``key``, else a new one, in use until ``_release``d; None when ``MAX_IDLE``
    are reading already (the caller then reads through a plain connection)."""
    with _lock:
        for index, (opened_with, conn) in enumerate(_idle):
            if opened_with == key:
                del _idle[index]
                _reading[0] += 1
                return conn
        if _reading[0] >= MAX_IDLE:
            return None
        _reading[0] += 1
    try:
        return configured(duckdb.connect(":memory:", config=settings))
    except BaseException:
        _release(None)
        raise


def _release(conn: duckdb.DuckDBPyConnection | None, key: _Key | None = None) -> None:
    """An instance done reading: kept idle when ``key`` is given (the oldest idle past ``MAX_IDLE`` closed), else
    closed."""
    with _lock:
        _reading[0] -= 1
        if conn is not None and key is not None:
            _idle.append((key, conn))
            conn = None
            while len(_idle) > MAX_IDLE:
                _idle.pop(0)[1].close()
    if conn is not None:
        conn.close()


def _close_idle_before_fork() -> None:
    """Close every idle instance and hold the lock until the fork is done (none is given back meanwhile)."""
    _lock.acquire()
    while _idle:
        _idle.pop()[1].close()


def _close_idle() -> None:
    _close_idle_before_fork()
    _lock.release()


def _after_fork_in_child() -> None:
    """The parent's reads in flight are not the child's: it counts its own from none."""
    _reading[0] = 0
    _lock.release()


os.register_at_fork(before=_close_idle_before_fork, after_in_parent=_lock.release, after_in_child=_after_fork_in_child)
# At exit, before the interpreter tears ``duckdb`` down: an instance freed after it is reported leaked on stderr.
atexit.register(_close_idle)


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
    conn = _take(key, settings)
    if conn is None:  # MAX_IDLE instances are reading: share DuckDB's cached instance of the file, as before
        plain = connect(path, config, read_only=True, timeout_s=timeout_s, log_every_s=log_every_s)
        try:
            yield plain
        finally:
            plain.close()
        return
    try:
        when_unlocked(path, partial(_attach, conn, path), timeout_s, log_every_s)
    except BaseException:
        _release(conn)
        raise
    try:
        conn.execute(f"USE {WRITER_CATALOG}")
        yield conn
    except BaseException:
        _release(conn)  # the file is let go with the instance
        raise
    try:
        detached = execute_or_close(conn, f"USE {_BASE_CATALOG}", f"DETACH {WRITER_CATALOG}")
    except BaseException:
        _release(None)  # execute_or_close closed it
        raise
    _release(detached, key)
