"""DuckDB plumbing below ``DuckDBWarehouse``: the cursor adapter, opening or attaching the file while another
process holds it, a setting changed for a few statements, and cutting a landed file into merge chunks of whole row
groups."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow.parquet as pq

from warehouse.errors import WarehouseLockTimeoutError, WarehouseTargetError
from warehouse.limits import large_row_bytes

__all__ = [
    "APPEND_BYTES",
    "DuckCursor",
    "append_slices",
    "chunk_ranges",
    "configured",
    "connect",
    "execute_or_close",
    "out_of_memory",
    "path_literal",
    "roll_back",
    "temporary_setting",
    "when_unlocked",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Rows per row group of what a writer appends. DuckDB holds a transaction's appended rows uncompressed in memory up
# to a whole row group (122,880 rows by default, ~90 MB of FHIR JSON); a quarter of that merged the same files
# with ~5 s less CPU per 10,000-patient export and 10-30 MB less peak (docs/PERFORMANCE.md). A multiple of 2,048.
WRITER_ROW_GROUP_ROWS = 30_720
WRITER_CATALOG = "ehrsync_warehouse"
# Uncompressed landing data one append joined to ``_changes`` reads. DuckDB's memory for that statement grows with
# it: 60 MB of 100 KB resources ran out of a 128 MB limit in one statement and fit in slices (docs/PERFORMANCE.md).
APPEND_BYTES = 8 * 1024 * 1024


class DuckCursor:
    """The shared logic's ``Cursor`` over one DuckDB connection (``%s`` placeholders become ``?``)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql.replace("%s", "?"), list(params))

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self.conn.execute(sql.replace("%s", "?"), list(params)).fetchone()
        return int(row[0]) if row else 0

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.executemany(sql.replace("%s", "?"), [list(r) for r in rows])

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.conn.fetchone()

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return self.conn.fetchmany(n)

    def column_names(self) -> list[str]:
        return [d[0] for d in self.conn.description or []]


@contextlib.contextmanager
def temporary_setting(conn: duckdb.DuckDBPyConnection, assign: str, restore: str) -> Iterator[None]:
    """Run ``assign`` (a ``SET``) for the statements inside, then ``restore``. After a failed statement DuckDB
    refuses every statement until the rollback, so the restore is skipped then and the statement's own error
    surfaces (``WarehouseMemoryError`` for an out-of-memory one); the writer's batch ends with that error."""
    conn.execute(assign)
    try:
        yield
    finally:
        with contextlib.suppress(duckdb.TransactionException):
            conn.execute(restore)


def out_of_memory(exc: duckdb.Error) -> bool:
    """Whether a DuckDB error other than ``OutOfMemoryException`` reports the memory limit (a failed commit)."""
    text = str(exc).lower()
    return any(m in text for m in ("out of memory", "failed to pin block", "could not allocate block"))


def roll_back(conn: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """Roll back, then restore what a failed statement's ``temporary_setting`` could not (DuckDB refuses every
    statement until the rollback): the held connection goes on to the next file, or a merge group's retry."""
    conn.rollback()
    conn.execute("RESET disabled_optimizers")
    conn.execute(f"SET memory_limit = '{memory_limit}'")


def connect(path: Path, config: dict[str, str], *, timeout_s: float, log_every_s: float) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-only (a writer attaches it: ``_duckdb_writer``); a lock held by a process outside
    ehrsync's lock file (an analyst's session, a CLI: DuckDB's IOException) is retried with jittered backoff,
    logged every ``log_every_s``, until ``timeout_s``."""
    opened = partial(duckdb.connect, str(path), read_only=True, config=dict(config))
    return when_unlocked(path, lambda: configured(opened()), timeout_s, log_every_s)


def configured(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Every connection's session settings: UTC timestamps, and no progress bar (a library never draws on stdout)."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET enable_progress_bar = false")
    return conn


def when_unlocked(path: Path, open_: Callable[[], T], timeout_s: float, log_every_s: float) -> T:
    """``open_()`` (opening or attaching ``path``), retried while another process outside ehrsync's lock file
    holds DuckDB's own lock on it (an IOException naming the lock), with jittered backoff, logged every
    ``log_every_s``; ``WarehouseLockTimeoutError`` after ``timeout_s``. A file this process has attached already
    (a connection of its own; in a forked child, the parent's) is ``WarehouseTargetError``."""
    started = time.monotonic()
    deadline = started + timeout_s
    next_log = started + log_every_s
    delay = 0.01
    while True:
        try:
            return open_()
        except duckdb.ResourceInUseException as exc:  # DuckDB's record of the files open in this process
            raise WarehouseTargetError(
                f"DuckDB file {path.name} is already attached in this process: by a connection of its own, or, in "
                f"a process forked while another of its threads had it open, by the parent's (copied into the "
                f"child): {exc}"
            ) from exc
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseLockTimeoutError(
                    f"DuckDB file {path.name} stayed locked by another process for {timeout_s:.0f}s"
                ) from exc
            now = time.monotonic()
            if now >= next_log:
                logger.info(
                    "waiting %.0fs so far for DuckDB file %s: another process outside ehrsync holds it (%s)",
                    now - started,
                    path.name,
                    exc,
                )
                next_log = now + log_every_s
            time.sleep(min(delay * (0.5 + random.random()), max(next_log - now, 0.01)))
            delay = min(delay * 2, 1.0)


def execute_or_close(conn: duckdb.DuckDBPyConnection, *statements: str) -> duckdb.DuckDBPyConnection:
    """Run ``statements`` on ``conn``; one that fails closes ``conn`` (letting go of the files it attached)."""
    try:
        for statement in statements:
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def path_literal(path: Path) -> str:
    """``path`` as a quoted SQL string literal (DuckDB's ``ATTACH`` takes no parameter)."""
    return "'" + str(path).replace("'", "''") + "'"


def chunk_ranges(meta: pq.FileMetaData, max_rows: int, max_bytes: int) -> list[tuple[int, int] | None]:
    """File rows ``[start, stop)`` of each merge chunk: whole row groups, at most ``max_rows`` rows and
    ``max_bytes`` uncompressed (a larger single group is a chunk of its own, as is each large resource's group);
    ``[None]`` when the whole file is one chunk."""
    ranges: list[tuple[int, int] | None] = []
    start = stop = size = 0
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        large = large_row_bytes(group) is not None
        if stop > start and (
            large or stop - start + group.num_rows > max_rows or size + group.total_byte_size > max_bytes
        ):
            ranges.append((start, stop))
            start, size = stop, 0
        stop += group.num_rows
        size += group.total_byte_size
        if large:
            ranges.append((start, stop))
            start, size = stop, 0
    if stop > start:
        ranges.append((start, stop))
    return ranges if len(ranges) > 1 else [None]


def append_slices(meta: pq.FileMetaData, rows: tuple[int, int] | None, max_bytes: int) -> list[tuple[int, int]]:
    """File rows ``[start, stop)`` of consecutive slices of ``rows`` (the whole file when None): whole row groups,
    at most ``max_bytes`` uncompressed together (a larger group is a slice of its own). DuckDB reads a group's JSON
    column chunk whole, so a slice through a group would read it twice."""
    first, last = rows if rows is not None else (0, meta.num_rows)
    slices: list[tuple[int, int]] = []
    start, size, offset = first, 0, 0
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        row, stop = max(offset, first), min(offset + group.num_rows, last)
        offset += group.num_rows
        if row >= stop:
            continue
        if row > start and size + group.total_byte_size > max_bytes:
            slices.append((start, row))
            start, size = row, 0
        size += group.total_byte_size
    if last > start:
        slices.append((start, last))
    return slices
