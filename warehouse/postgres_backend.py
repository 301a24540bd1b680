"""PostgreSQL warehouse (psycopg 3): landed files merge in chunks sized by bytes, each one transaction of a COPY
into a temp staging table and one guarded ``INSERT ... ON CONFLICT`` (warehouse/_pg_chunks.py, _pg_merge.py).

Writers on the same (connection, resource type) are serialised by a transaction-scoped advisory lock, so each
chunk's upsert sees the table its classification saw and the reported counts stay exact. A failure mid-file
leaves the committed chunks, which a replay of the file reports as unchanged (BDX-24); the engine advances its
cursor only after ``upsert`` returns. Reads use server-side cursors so ``live_ids`` and ``row_fingerprint`` never
pull a whole table into memory at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg

from warehouse import _ahead, _pg_chunks, _pg_merge, _sql
from warehouse._cursor import Cursor
from warehouse.errors import (
    InvalidInputError,
    LandedFileError,
    WarehouseLockTimeoutError,
    WarehouseNotCreatedError,
    WarehouseTargetError,
)
from warehouse.landed import LandedFile
from warehouse.merge import UpsertStats, Warehouse, check_landing_file

__all__ = ["PostgresWarehouse", "psycopg_conninfo"]

logger = logging.getLogger(__name__)
_COPY_BATCH = 10_000
# Resource JSON per merge transaction: big enough that per-statement costs vanish, small enough that a chunk's
# staging rows and WAL stay modest (docs/PERFORMANCE.md, "PostgreSQL upsert").
DEFAULT_UPSERT_CHUNK_BYTES = 32 * 1024 * 1024


def psycopg_conninfo(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy spelling) -> the ``postgresql://`` URL libpq understands."""
    for prefix in ("postgresql+psycopg://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise WarehouseTargetError("not a PostgreSQL URL for psycopg 3 (postgresql:// or postgresql+psycopg://)")


class _PgCursor:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cur.execute(sql, tuple(params) if params else None)

    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.execute(sql, params)
        return max(self.cur.rowcount, 0)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cur.executemany(sql, [tuple(r) for r in rows])

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.cur.fetchone()

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return self.cur.fetchmany(n)

    def column_names(self) -> list[str]:
        return [d.name for d in self.cur.description or []]


class PostgresWarehouse(Warehouse):
    dialect = _sql.POSTGRES

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        lock_timeout_s: float | None = None,
        upsert_chunk_bytes: int = DEFAULT_UPSERT_CHUNK_BYTES,
    ) -> None:
        """``lock_timeout_s`` bounds how long a statement waits for a table lock (DDL of a migration holds one)
        and how long connecting may take: a reader that must answer soon gets ``WarehouseLockTimeoutError``.
        ``upsert_chunk_bytes`` is the resource JSON merged per transaction."""
        if not isinstance(upsert_chunk_bytes, int) or upsert_chunk_bytes < 1:
            raise InvalidInputError("upsert_chunk_bytes must be a positive number of bytes")
        self.upsert_chunk_bytes = upsert_chunk_bytes
        # Where upserts spent their time (seconds per phase, summed over chunks): the benchmark's profile. "read"
        # runs in the read-ahead thread alongside classify and write, so the phases may sum past the wall time.
        self.phase_seconds = dict.fromkeys(("prepass", "read", "classify", "write", "commit"), 0.0)
        self.read_only = read_only
        self.url = url
        conninfo = psycopg_conninfo(url)
        options = "-c default_transaction_read_only=on -c TimeZone=UTC" if read_only else "-c TimeZone=UTC"
        if not read_only:  # the staging table of one chunk stays in the session's memory (default: 8 MB)
            options += f" -c temp_buffers={_pg_merge.temp_buffers_mib(upsert_chunk_bytes)}MB"
        extra: dict[str, Any] = {}
        if lock_timeout_s is not None:
            options += f" -c lock_timeout={max(int(lock_timeout_s * 1000), 1)}"
            extra["connect_timeout"] = max(int(lock_timeout_s + 0.999), 2)
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(conninfo, autocommit=True, options=options, **extra)
        except psycopg.OperationalError as exc:
            raise WarehouseTargetError(f"cannot connect to the PostgreSQL warehouse: {exc}") from exc
        self._lock = threading.RLock()  # one psycopg connection: one transaction at a time per instance
        if not read_only:
            with self._write("schema") as cur:
                self._create_schema(cur)

    @contextlib.contextmanager
    def _write(self, lock_key: str) -> Iterator[Cursor]:
        if self.read_only:
            raise WarehouseTargetError("the PostgreSQL warehouse was opened read-only")
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ehrsync-warehouse:{lock_key}",))
            yield _PgCursor(cur)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Cursor]:
        """A snapshot read; a lock wait past ``lock_timeout_s``, a schema never created and a lost server become
        the warehouse's own errors, so a reader never sees a psycopg one."""
        try:
            with self._lock, self._conn.transaction(), self._conn.cursor(name=f"wh_{uuid.uuid4().hex[:12]}") as cur:
                yield _PgCursor(cur)
        except psycopg.errors.LockNotAvailable as exc:
            raise WarehouseLockTimeoutError(f"the PostgreSQL warehouse is locked by another session: {exc}") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise WarehouseNotCreatedError(f"the PostgreSQL warehouse lacks a table (never created?): {exc}") from exc
        except psycopg.OperationalError as exc:
            raise WarehouseTargetError(f"the PostgreSQL warehouse is unavailable: {exc}") from exc

    def upsert(self, landed: LandedFile) -> UpsertStats:
        """Merge one landed file chunk by chunk (``upsert_chunk_bytes`` of JSON each, one transaction each), then
        its quarantine. Bad files are refused before the first transaction."""
        check_landing_file(landed)
        path = Path(landed.path)
        started = time.perf_counter()
        _pg_chunks.check_keys(path, landed.connection_id, landed.resource_type)
        losers = _pg_chunks.losing_rows(path)
        self.phase_seconds["prepass"] += time.perf_counter() - started
        inserted = updated = distinct = 0
        chunks = _pg_chunks.byte_chunks(path, self.upsert_chunk_bytes, losers)
        prepared = _pg_merge.prepared_chunks(chunks, self.phase_seconds)
        with _ahead.one_ahead(prepared, name=f"pg-upsert-read-{path.name}") as ready:
            for chunk in ready:
                created, changed = self._merge_chunk(landed, chunk)
                inserted, updated, distinct = inserted + created, updated + changed, distinct + chunk.rows.num_rows
        if landed.quarantine_path is not None:
            with self._write(f"{landed.connection_id}/{landed.resource_type}") as cur:
                self._insert_quarantine(cur, Path(landed.quarantine_path))
        stats = UpsertStats(inserted, updated, distinct - inserted - updated, max(landed.rows - distinct, 0))
        logger.info(
            "upserted %s/%s from %s: %d inserted, %d updated, %d unchanged",
            landed.connection_id,
            landed.resource_type,
            path.name,
            stats.inserted,
            stats.updated,
            stats.unchanged,
        )
        return stats

    def _merge_chunk(self, landed: LandedFile, chunk: _pg_merge.PreparedChunk) -> tuple[int, int]:
        """One transaction: classify the chunk's keys, stage and upsert its changed rows; (created, updated)."""
        try:
            with self._write(f"{landed.connection_id}/{landed.resource_type}") as cur:
                assert isinstance(cur, _PgCursor)
                for ddl in _pg_merge.create_tables_sql():
                    cur.execute(ddl)
                scope = (landed.connection_id, landed.resource_type)
                created, changed = _pg_merge.merge_chunk(cur.cur, chunk, scope, datetime.now(UTC), self.phase_seconds)
                merged = time.perf_counter()
        except psycopg.errors.DataError as exc:  # e.g. text that is not JSON; the detail would quote the resource
            raise LandedFileError(
                f"landed file {landed.path}: PostgreSQL refused a row of the chunk being merged "
                f"({exc.diag.message_primary}, SQLSTATE {exc.sqlstate}); earlier chunks stay committed"
            ) from None
        self.phase_seconds["commit"] += time.perf_counter() - merged
        return created, changed

    def _stage_ids(self, cur: Cursor, connection_id: str, resource_type: str, ids: Iterable[str]) -> None:
        assert isinstance(cur, _PgCursor)
        cur.execute("CREATE TEMP TABLE _tomb_raw (id TEXT) ON COMMIT DROP")
        it = iter(ids)
        with cur.cur.copy("COPY _tomb_raw (id) FROM STDIN") as copy:
            while chunk := list(islice(it, _COPY_BATCH)):
                for i in chunk:
                    if not isinstance(i, str) or not i:
                        raise InvalidInputError("tombstone ids must be non-empty strings")
                    copy.write_row((i,))
        cur.execute(
            "CREATE TEMP TABLE _tomb ON COMMIT DROP AS SELECT DISTINCT CAST(%s AS TEXT) AS connection_id, "
            "CAST(%s AS TEXT) AS resource_type, id FROM _tomb_raw",
            (connection_id, resource_type),
        )

    def close(self) -> None:
        self._conn.close()
