"""DuckDB warehouse: short-lived connections under an inter-process file lock.

Several Dagster run processes upsert into one file: each write takes ``<db>.lock`` exclusively, attaches the
file (``_duckdb_writer``), commits and detaches it, so the DuckDB write lock is held only for the length of one
upsert. A lock held
by a process outside ehrsync (DuckDB's IOException) is retried with backoff until the timeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from warehouse import _sql
from warehouse._cursor import Cursor
from warehouse._duck_merge import merge_chunk, stage_ids, stage_winners
from warehouse._duckdb_io import (
    APPEND_BYTES,
    DuckCursor,
    append_slices,
    chunk_ranges,
    out_of_memory,
    roll_back,
    temporary_setting,
)
from warehouse._duckdb_reader import read_attached
from warehouse._duckdb_writer import Writing, write_attached
from warehouse._filelock import LOCK_LOG_EVERY_S, file_lock
from warehouse.errors import (
    InvalidInputError,
    WarehouseMemoryError,
    WarehouseNotCreatedError,
    WarehouseTargetError,
)
from warehouse.landed import LandedFile
from warehouse.limits import LARGE_ROW_MEMORY_FACTOR, largest_row, memory_mib
from warehouse.machine import usable_cores
from warehouse.merge import UpsertStats, Warehouse, check_landing_file

__all__ = ["DEFAULT_MEMORY_LIMIT", "DuckDBWarehouse"]

logger = logging.getLogger(__name__)
DEFAULT_MEMORY_LIMIT = "128MB"  # DuckDB memory_limit of each connection (EHRSYNC_DUCKDB_MEMORY_LIMIT)
LEAN_MEMORY_MIN_MIB = 16  # ``lean_memory`` never goes below this (nor below EHRSYNC_DUCKDB_MEMORY_LIMIT's floor)
_MIB = 1024 * 1024


class DuckDBWarehouse(Warehouse):
    dialect = _sql.DUCKDB

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        lock_timeout_s: float = 300.0,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
        upsert_chunk_rows: int = 50_000,
        upsert_chunk_bytes: int = 64 * 1024 * 1024,
        lock_log_every_s: float = LOCK_LOG_EVERY_S,
        owner: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.lock_timeout_s = lock_timeout_s
        # A waiting writer logs who holds the lock this often; ``owner`` (e.g. a run id) is written into the lock
        # file while this instance holds it, so other writers' logs name it.
        self.lock_log_every_s = lock_log_every_s
        self.owner = owner
        # threads: the cores this process may run on unless given (the merge runs one file at a time). Nothing
        # reads fhir_resources in insertion order, and keeping it made inserts hold more in memory.
        self._config = {
            "memory_limit": memory_limit,
            "threads": str(threads or usable_cores()),
            "preserve_insertion_order": "false",
        }
        self._memory_limit_mib = memory_mib(memory_limit)
        self._limit_now = memory_limit  # the limit in force: the configured one, or ``lean_memory``'s
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._closed = False
        self._writing: Writing | None = None  # the held batch's: spoiled by a failed write, even one handled
        self._in_transaction = False
        if upsert_chunk_rows < 1 or upsert_chunk_bytes < 1:
            raise InvalidInputError("upsert_chunk_rows and upsert_chunk_bytes must be at least 1")
        self.upsert_chunk_rows = upsert_chunk_rows
        self.upsert_chunk_bytes = upsert_chunk_bytes
        if read_only:
            if not self.path.is_file():
                raise WarehouseNotCreatedError(f"DuckDB warehouse {self.path} does not exist (opened read-only)")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write("schema") as cur:
            self._create_schema(cur)

    @property
    def _held(self) -> duckdb.DuckDBPyConnection | None:
        """The held batch's connection (``batch``), or None outside one."""
        return self._writing.conn if self._writing is not None else None

    def _check_open(self) -> None:
        if self._closed:
            raise WarehouseTargetError("the warehouse is closed")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the write lock and one connection across many writes (re-entrant).

        Letting go of the file (``_duckdb_writer``) checkpoints DuckDB's log into it; doing that once per landed
        file cost about 40 % of a 10,000-patient export (docs/PERFORMANCE.md). Other processes wait for the lock.
        """
        self._check_open()
        if self._held is not None:
            yield
            return
        if self.read_only:
            raise WarehouseTargetError(f"warehouse {self.path.name} was opened read-only")
        with (
            file_lock(
                self._lock_path,
                exclusive=True,
                timeout_s=self.lock_timeout_s,
                log_every_s=self.lock_log_every_s,
                owner=self.owner,
            ),
            write_attached(
                self.path, self._config, timeout_s=self.lock_timeout_s, log_every_s=self.lock_log_every_s
            ) as writing,
        ):
            self._writing = writing
            try:
                yield
            finally:
                self._writing = None

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction for every write inside (re-entrant): the writes' own ``_write`` blocks join it."""
        if self._in_transaction:
            yield
            return
        with self._write("transaction"):
            self._in_transaction = True
            try:
                yield
            finally:
                self._in_transaction = False

    @contextlib.contextmanager
    def lean_memory(self) -> Iterator[bool]:
        """Half the configured memory limit (at least ``LEAN_MEMORY_MIN_MIB``) on the held connection for the
        writes inside, then the configured one again (``Warehouse.lean_memory``)."""
        lean_mib = max(LEAN_MEMORY_MIN_MIB, self._memory_limit_mib // 2)
        if lean_mib >= self._memory_limit_mib:
            yield False
            return
        with self.batch():
            assert self._held is not None
            configured, lean = self._config["memory_limit"], f"{lean_mib}MiB"
            with temporary_setting(self._held, f"SET memory_limit = '{lean}'", f"SET memory_limit = '{configured}'"):
                self._limit_now = lean
                try:
                    yield True
                finally:
                    self._limit_now = configured

    @contextlib.contextmanager
    def _write(self, lock_key: str) -> Iterator[Cursor]:
        self._check_open()
        if self.read_only:
            raise WarehouseTargetError(f"warehouse {self.path.name} was opened read-only")
        with self.batch():
            conn = self._held
            assert conn is not None
            if self._in_transaction:  # inside transaction(): it begins, commits or rolls back
                yield DuckCursor(conn)
                return
            conn.begin()
            try:
                yield DuckCursor(conn)
            except BaseException as exc:
                self._spoil()
                roll_back(conn, self._limit_now)
                if isinstance(exc, duckdb.OutOfMemoryException):
                    raise self._memory_error(lock_key, exc) from exc
                raise
            try:
                conn.commit()
            except BaseException as exc:
                self._spoil()
                # A commit writes the transaction's rows out and can run out of the limit itself ("Failed to
                # commit: failed to pin block ..."); DuckDB has then rolled the transaction back.
                if isinstance(exc, duckdb.OutOfMemoryException) or (
                    isinstance(exc, duckdb.TransactionException) and out_of_memory(exc)
                ):
                    raise self._memory_error(f"the commit of {lock_key}", exc) from exc
                raise

    def _spoil(self) -> None:
        """The held batch's instance is closed at its end, not kept for the next one (``_duckdb_writer``)."""
        if self._writing is not None:
            self._writing.spoiled = True

    def _memory_error(self, where: str, exc: duckdb.Error) -> WarehouseMemoryError:
        return WarehouseMemoryError(f"DuckDB ran out of its memory limit ({self._limit_now}) in {where}: {exc}")

    @contextlib.contextmanager
    def _read(self) -> Iterator[Cursor]:
        self._check_open()
        if self._held is not None:  # inside batch(): this process holds the only connection (and the lock)
            try:
                yield DuckCursor(self._held)
            except BaseException:
                self._spoil()
                raise
            return
        with (
            file_lock(
                self._lock_path, exclusive=False, timeout_s=self.lock_timeout_s, log_every_s=self.lock_log_every_s
            ),
            read_attached(
                self.path, self._config, timeout_s=self.lock_timeout_s, log_every_s=self.lock_log_every_s
            ) as conn,
        ):
            yield DuckCursor(conn)

    def _row_ranges(self, meta: pq.FileMetaData) -> list[tuple[int, int] | None]:
        """Bounded memory whatever the file (a server decides how large a bulk file and its resources are): the
        merge holds one chunk in memory, so a file is merged in chunks of whole Parquet row groups, each at most
        ``upsert_chunk_rows`` rows and ``upsert_chunk_bytes`` of uncompressed data (a single larger row group is
        its own chunk; landing caps those, and gives each large resource a group of its own, which is then a
        chunk of its own too), one transaction each. Which copy of an id wins is decided over the whole file
        first (``_duck_merge.stage_winners``), so a chunked merge and its replays end exactly like a whole one."""
        return chunk_ranges(meta, self.upsert_chunk_rows, self.upsert_chunk_bytes)

    def upsert(self, landed: LandedFile) -> UpsertStats:
        check_landing_file(landed)
        meta = pq.ParquetFile(landed.path).metadata  # read once: the chunks, their large rows, the hash column
        ranges = self._row_ranges(meta)
        with self.batch():  # one connection for every chunk of the file (the winners table lives on it)
            chunks = [
                self._upsert_chunk(landed, meta, rows, first=number == 1, last=number == len(ranges))
                for number, rows in enumerate(ranges, start=1)
            ]
        inserted, updated, distinct = (sum(counts) for counts in zip(*chunks, strict=True))
        stats = UpsertStats(inserted, updated, distinct - inserted - updated, max(landed.rows - distinct, 0))
        self._log_stats(landed, stats)
        return stats

    def _upsert_chunk(
        self, landed: LandedFile, meta: pq.FileMetaData, rows: tuple[int, int] | None, *, first: bool, last: bool
    ) -> tuple[int, int, int]:
        """Merge one chunk in its own transaction (or the caller's, see ``transaction``); a crash between chunks
        leaves a state a replay completes (BDX-24), and each id's winner is chosen over the whole file, so chunking
        never changes the result. A chunk holding one large resource merges under a memory limit sized for it
        (DuckDB's JSON cast and Parquet read hold several copies of one value: a 20 MB resource did not fit in
        128 MB), then the configured limit is restored."""
        largest = largest_row(meta, rows)
        hashed = "content_hash" in meta.schema.names  # landed with its hashes (LANDING_FILE_SCHEMA)
        with self._write(f"{landed.connection_id}/{landed.resource_type}") as cur:
            assert isinstance(cur, DuckCursor)
            with self._room_for(cur, largest):
                if rows is not None and first:
                    stage_winners(cur, Path(landed.path))
                slices = append_slices(meta, rows, APPEND_BYTES)
                counts = merge_chunk(cur, landed, rows, hashed=hashed, slices=slices)
                if last and landed.quarantine_path is not None:
                    self._insert_quarantine(cur, Path(landed.quarantine_path))
        return counts

    def _room_for(self, cur: DuckCursor, largest: int | None) -> contextlib.AbstractContextManager[None]:
        """The memory limit in force, raised for a chunk holding one large resource (``largest`` bytes)."""
        if largest is None:
            return contextlib.nullcontext()
        need_mib = memory_mib(self._limit_now) + LARGE_ROW_MEMORY_FACTOR * -(-largest // _MIB)
        logger.info("merging a %d-byte resource with memory_limit %d MiB", largest, need_mib)
        restore = f"SET memory_limit = '{self._limit_now}'"
        return temporary_setting(cur.conn, f"SET memory_limit = '{need_mib}MiB'", restore)

    def _stage_ids(self, cur: Cursor, connection_id: str, resource_type: str, ids: Iterable[str]) -> None:
        assert isinstance(cur, DuckCursor)
        stage_ids(cur, connection_id, resource_type, ids)

    def close(self) -> None:
        self._closed = True
