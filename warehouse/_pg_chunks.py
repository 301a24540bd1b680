"""A landed Parquet file as merge chunks sized by bytes, streamed (the PostgreSQL merge, warehouse/_pg_merge.py).

A file is read once, in Arrow record batches, and cut into chunks of at most ``chunk_bytes`` of resource JSON (a
chunk holds at least one row, so a resource larger than the budget is a chunk of its own). Which copy of an id
wins within the file is decided over the whole file first, from the key columns only (``losing_rows``), so a
chunked merge stores and counts exactly what a whole-file merge would, wherever the chunk boundaries fall.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Generator, Iterator
from operator import itemgetter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse import _sql
from warehouse._duckdb_io import configured
from warehouse._duckdb_pool import InstancePool
from warehouse.errors import LandedFileError
from warehouse.landed import LANDING_SCHEMA

__all__ = ["BATCH_ROWS", "byte_chunks", "check_keys", "close_idle", "losing_rows"]

# Rows per Arrow batch read from the file: small enough that a batch of large resources stays small in memory.
BATCH_ROWS = 2_048
_KEYS = "read_parquet(?, file_row_number = true)"
_CONFIG = (("memory_limit", "256MB"), ("threads", "2"))
_pool = InstancePool(1)


def close_idle() -> None:
    """Close the idle key-check instance (a test's fresh start; the pool also closes it before a fork and at exit)."""
    _pool.close_idle()


def _open() -> duckdb.DuckDBPyConnection:
    return configured(duckdb.connect(":memory:", config=dict(_CONFIG)))  # the session settings every reader's has


@contextlib.contextmanager
def _duck() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB for a file's key checks, kept idle between files: opening one costs ~12 ms of CPU, and
    every PostgreSQL upsert of a landed file asks two (``check_keys``, ``losing_rows``). The queries leave no state
    behind; one that raises closes its instance rather than giving it back."""
    conn = _pool.take(_CONFIG, _open)
    assert conn is not None  # no max_busy: a second user at once opens its own
    try:
        yield conn
    except BaseException:
        _pool.give_back(conn)
        raise
    _pool.give_back(conn, _CONFIG)


def check_keys(path: Path, connection_id: str, resource_type: str) -> None:
    """Refuse a file holding rows of another (connection, type) before any transaction starts."""
    with _duck() as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {_KEYS} WHERE connection_id IS DISTINCT FROM ? OR resource_type IS DISTINCT FROM ?",
            [str(path), connection_id, resource_type],
        ).fetchone()
    if row and row[0]:
        raise LandedFileError(
            f"landed file {path} holds rows of another connection or resource type than {connection_id}/{resource_type}"
        )


def losing_rows(path: Path) -> list[int]:
    """File row numbers that lose to another row of the same id (BDX-24 within a file: the newest lastUpdated
    wins, then the highest numeric versionId, then the later line, ``_sql.winner_order``). Only ids seen twice
    are ranked, so the usual file costs one hash aggregate."""
    with _duck() as conn:
        rows = conn.execute(
            f"WITH k AS (SELECT id, last_updated, version_id, file_row_number AS r FROM {_KEYS}) "
            "SELECT r FROM k WHERE id IN (SELECT id FROM k GROUP BY id HAVING count(*) > 1) "
            f"QUALIFY row_number() OVER (PARTITION BY id {_sql.winner_order('version_id', 'r')}) > 1",
            [str(path)],
        ).fetchall()
    return sorted(int(r[0]) for r in rows)


def _winners(batch: pa.RecordBatch, first_row: int, losers: list[int]) -> pa.RecordBatch:
    """``batch`` (file rows from ``first_row``) without its losing rows (``losers``: sorted file row numbers)."""
    lo = bisect.bisect_left(losers, first_row)
    hi = bisect.bisect_left(losers, first_row + batch.num_rows)
    if lo == hi:
        return batch
    keep = [True] * batch.num_rows
    for row in losers[lo:hi]:
        keep[row - first_row] = False
    return batch.filter(pa.array(keep, type=pa.bool_()))


def _pieces(path: Path, chunk_bytes: int, losers: list[int]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(chunk number, batch slice) pairs in file order; a chunk's slices sum to at most ``chunk_bytes`` of JSON."""
    chunk, used, first_row = 0, 0, 0
    pf = pq.ParquetFile(path)
    hashed = "content_hash" in pf.schema_arrow.names  # landed with its hashes (LANDING_FILE_SCHEMA)
    columns = [*LANDING_SCHEMA.names, "content_hash"] if hashed else LANDING_SCHEMA.names
    for raw in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        batch = _winners(raw, first_row, losers)
        first_row += raw.num_rows
        sizes = pc.binary_length(batch.column("resource_json")).fill_null(0).cast(pa.int64())
        start = 0
        while start < batch.num_rows:
            cumulative = pc.cumulative_sum(sizes.slice(start))  # non-decreasing: the rows that fit are a prefix
            take = pc.sum(pc.less_equal(cumulative, chunk_bytes - used).cast(pa.int64())).as_py() or 0
            if take == 0 and used == 0:
                take = 1  # a resource larger than the budget: a chunk of its own
            if take:
                yield chunk, batch.slice(start, take)
                used += cumulative[take - 1].as_py()
                start += take
            if start < batch.num_rows:  # the next row does not fit: the chunk is full
                chunk, used = chunk + 1, 0


def byte_chunks(path: Path, chunk_bytes: int, losers: list[int]) -> Generator[Iterator[pa.RecordBatch], None, None]:
    """The file's winning rows as chunks, each an iterator of record batches (consume one before the next)."""
    for _, group in itertools.groupby(_pieces(path, chunk_bytes, losers), key=itemgetter(0)):
        yield (piece for _, piece in group)
