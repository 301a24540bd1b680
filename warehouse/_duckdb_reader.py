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
its own with a limit of its own. Idle instances are closed before the process forks and at exit
(``_duckdb_pool``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import duckdb

from warehouse._duckdb_io import WRITER_CATALOG, configured, connect, execute_or_close, path_literal, when_unlocked
from warehouse._duckdb_pool import InstancePool

__all__ = ["MAX_IDLE", "read_attached"]

MAX_IDLE = 2  # two files or configurations read in turn each keep theirs
_BASE_CATALOG = "memory"  # an in-memory database's own catalog, the default again before the detach
_pool = InstancePool(MAX_IDLE, max_busy=MAX_IDLE)


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
    conn = _pool.take(key, lambda: configured(duckdb.connect(":memory:", config=settings)))
    if conn is None:  # MAX_IDLE instances are reading: share DuckDB's cached instance of the file, as before
        plain = connect(path, config, timeout_s=timeout_s, log_every_s=log_every_s)
        try:
            yield plain
        finally:
            plain.close()
        return
    try:
        when_unlocked(path, partial(_attach, conn, path), timeout_s, log_every_s)
    except BaseException:
        _pool.give_back(conn)
        raise
    try:
        conn.execute(f"USE {WRITER_CATALOG}")
        yield conn
    except BaseException:
        _pool.give_back(conn)  # the file is let go with the instance
        raise
    try:
        detached = execute_or_close(conn, f"USE {_BASE_CATALOG}", f"DETACH {WRITER_CATALOG}")
    except BaseException:
        _pool.give_back(None)  # execute_or_close closed it
        raise
    _pool.give_back(detached, key)
