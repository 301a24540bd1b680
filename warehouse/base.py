"""The backend-neutral warehouse: BDX-21/22/24 behaviour written once over a tiny cursor protocol."""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pyarrow.parquet as pq

from warehouse import _sql
from warehouse._outcomes import ErrorCounts, outcome_rows
from warehouse._sql import Dialect
from warehouse.attachments import AttachmentRef
from warehouse.errors import InvalidInputError, LandedFileError, SchemaVersionError
from warehouse.landed import LANDING_SCHEMA, QUARANTINE_SCHEMA, LandedFile
from warehouse.views import VIEW_NAMES, view_statements

__all__ = ["Cursor", "KeyCounts", "UpsertStats", "Warehouse"]

logger = logging.getLogger(__name__)
FETCH_ROWS = 10_000


class Cursor(Protocol):
    """What the shared logic needs from a DB connection; ``%s`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def fetchone(self) -> tuple[Any, ...] | None: ...
    def fetchmany(self, n: int) -> list[tuple[Any, ...]]: ...
    def column_names(self) -> list[str]: ...


@dataclass(frozen=True)
class UpsertStats:
    """Exact outcome of one upsert, per distinct id: ``unchanged`` includes identical replays and older versions
    that were ignored; ``duplicates`` counts extra rows for an id already in the same file (last one won)."""

    inserted: int
    updated: int
    unchanged: int
    duplicates: int = 0


@dataclass(frozen=True)
class KeyCounts:
    """``rows`` stored (tombstones included), distinct ``keys`` among them, and ``live`` (not tombstoned) rows."""

    rows: int
    keys: int
    live: int

    @property
    def duplicates(self) -> int:
        return self.rows - self.keys


def _aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def check_landing_file(landed: LandedFile) -> None:
    """Refuse a missing file or one without the BDX-23 columns before any SQL touches it."""
    if not Path(landed.path).is_file():
        raise LandedFileError(f"landed file {landed.path} does not exist")
    try:
        names = set(pq.read_schema(landed.path).names)
    except OSError as exc:
        raise LandedFileError(f"landed file {landed.path} is not a readable Parquet file: {exc}") from exc
    missing = set(LANDING_SCHEMA.names) - names
    if missing:
        raise LandedFileError(f"landed file {landed.path} lacks landing columns {sorted(missing)}")


class Warehouse(ABC):
    """``fhir_resources`` plus errors, quarantine, attachments and analyst views, on DuckDB or PostgreSQL."""

    dialect: Dialect
    read_only: bool

    # -- backend hooks ------------------------------------------------------------------------------------------
    @abstractmethod
    def _write(self, lock_key: str) -> AbstractContextManager[Cursor]:
        """A cursor in one write transaction, exclusive for ``lock_key`` across processes."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads (a consistent snapshot)."""

    @abstractmethod
    def _stage_landed(self, cur: Cursor, path: Path, rows: tuple[int, int] | None = None) -> None:
        """Create temp table ``_stage`` from the landing Parquet (only file rows ``[start, stop)`` when ``rows``
        is given): one row per key (last by lastUpdated, then file order), columns ``_sql.STAGE_COLUMNS`` +
        ``resource_json``."""

    def _row_ranges(self, landed: LandedFile) -> list[tuple[int, int] | None]:
        """How one landed file is split into upsert transactions; ``[None]`` = the whole file at once."""
        return [None]

    @abstractmethod
    def _stage_ids(self, cur: Cursor, connection_id: str, resource_type: str, ids: Iterable[str]) -> None:
        """Create temp table ``_tomb(connection_id, resource_type, id)`` holding the distinct ids."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the object is unusable afterwards."""

    # -- schema -------------------------------------------------------------------------------------------------
    def _create_schema(self, cur: Cursor) -> None:
        for stmt in _sql.schema_ddl(self.dialect):
            cur.execute(stmt)
        cur.execute("SELECT max(version) FROM schema_version")
        row = cur.fetchone()
        current = row[0] if row else None
        if current is not None and current > _sql.SCHEMA_VERSION:
            raise SchemaVersionError(f"warehouse schema version {current} is newer than {_sql.SCHEMA_VERSION}")
        if current is not None and current < _sql.SCHEMA_VERSION:
            self._migrate(cur, int(current))
        if current is None or current < _sql.SCHEMA_VERSION:
            cur.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                (_sql.SCHEMA_VERSION, datetime.now(UTC)),
            )

    def _migrate(self, cur: Cursor, current: int) -> None:
        """Bring a schema written at version ``current`` to ``_sql.SCHEMA_VERSION`` (same transaction)."""
        if current < 2 and not self.dialect.keyed_resources:
            # Version 2 drops the key index of fhir_resources on this dialect: rebuild the table without it.
            logger.info("migrating warehouse schema %d -> 2: fhir_resources without its key index", current)
            cur.execute("ALTER TABLE fhir_resources RENAME TO fhir_resources_v1")
            cur.execute(_sql.resources_ddl(self.dialect))
            columns = ", ".join(_sql.RESOURCE_COLUMNS)
            cur.execute(f"INSERT INTO fhir_resources ({columns}) SELECT {columns} FROM fhir_resources_v1")
            cur.execute("DROP TABLE fhir_resources_v1")

    def batch(self) -> AbstractContextManager[None]:
        """Run many writes (a whole export's files) on one held connection; each write is still its own
        transaction. Backends where opening a connection is cheap need nothing here."""
        return nullcontext()

    # -- BDX-24 -------------------------------------------------------------------------------------------------
    def upsert(self, landed: LandedFile) -> UpsertStats:
        """Merge one landed file into ``fhir_resources`` (and its quarantine into ``fhir_quarantine``)."""
        check_landing_file(landed)
        ranges = self._row_ranges(landed)
        with self.batch():  # one connection for every chunk of the file (the winners table lives on it)
            chunks = [
                self._upsert_chunk(landed, rows, first=number == 1, last=number == len(ranges))
                for number, rows in enumerate(ranges, start=1)
            ]
        inserted, updated, distinct = (sum(counts) for counts in zip(*chunks, strict=True))
        stats = UpsertStats(inserted, updated, distinct - inserted - updated, max(landed.rows - distinct, 0))
        logger.info(
            "upserted %s/%s from %s: %d inserted, %d updated, %d unchanged",
            landed.connection_id,
            landed.resource_type,
            Path(landed.path).name,
            stats.inserted,
            stats.updated,
            stats.unchanged,
        )
        return stats

    def _upsert_chunk(
        self, landed: LandedFile, rows: tuple[int, int] | None, *, first: bool, last: bool
    ) -> tuple[int, int, int]:
        """Merge one chunk in its own transaction; returns its (inserted, updated, distinct). A crash between
        chunks leaves a state a replay completes (BDX-24), and each id's winner is chosen over the whole file, so
        chunking never changes the result."""
        with self._write(f"{landed.connection_id}/{landed.resource_type}") as cur:
            if rows is not None and first:
                self._stage_winners(cur, Path(landed.path))
            self._stage_landed(cur, Path(landed.path), rows)
            cur.execute(
                "SELECT count(*) FROM _stage WHERE connection_id <> %s OR resource_type <> %s",
                (landed.connection_id, landed.resource_type),
            )
            row = cur.fetchone()
            if row and row[0]:
                raise LandedFileError(
                    f"landed file {landed.path} holds rows of another connection or resource type than "
                    f"{landed.connection_id}/{landed.resource_type}"
                )
            counts = self._merge_stage(cur, landed)
            if last and landed.quarantine_path is not None:
                self._insert_quarantine(cur, Path(landed.quarantine_path))
        return counts

    def _stage_winners(self, cur: Cursor, path: Path) -> None:
        """Backends that split a file (``_row_ranges``) create ``_winners(id, file_row_number)`` here: the row that
        wins each id over the whole file, so that ``_stage_landed`` of a chunk stages only winners."""
        raise NotImplementedError(f"{type(self).__name__} splits landed files but does not choose winners")

    def _merge_stage(self, cur: Cursor, landed: LandedFile) -> tuple[int, int, int]:
        """Write ``_stage`` into ``fhir_resources`` under the BDX-24 rule; returns (inserted, updated, distinct)."""
        if self.dialect.keyed_resources:
            cur.execute(_sql.classify_sql())
            counts = cur.fetchone()
            assert counts is not None
            inserted, updated, distinct = (int(c) for c in counts)
            if inserted or updated:
                cur.execute(_sql.upsert_sql(self.dialect), (datetime.now(UTC),))
            return inserted, updated, distinct
        scope = (landed.connection_id, landed.resource_type)
        cur.execute(_sql.changes_sql(), scope)
        cur.execute(
            "SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new), "
            "(SELECT count(*) FROM _stage) FROM _changes"
        )
        counts = cur.fetchone()
        assert counts is not None
        inserted, updated, distinct = (int(c) for c in counts)
        if updated:
            cur.execute(_sql.delete_replaced_sql(), scope)
        if inserted or updated:
            every = inserted == distinct  # a first load: nothing stored to compare, append the stage as is
            cur.execute(_sql.append_sql(self.dialect, every_staged_row=every), (datetime.now(UTC),))
        return inserted, updated, distinct

    # -- BDX-21 -------------------------------------------------------------------------------------------------
    def tombstone(
        self,
        connection_id: str,
        resource_type: str,
        ids: Iterable[str],
        deleted_at: datetime,
        *,
        tenant_id: str | None = None,
    ) -> int:
        """Soft-delete ids; returns how many became deleted. Rows updated after ``deleted_at`` stay live, and
        unknown ids get a placeholder tombstone so a late, older copy cannot resurrect them."""
        when = _aware("deleted_at", deleted_at)
        with self._write(f"{connection_id}/{resource_type}") as cur:
            self._stage_ids(cur, connection_id, resource_type, ids)
            mark, insert = _sql.tombstone_sql()
            marked = cur.execute_count(mark, (when, when))
            placed = cur.execute_count(insert, (tenant_id, when, datetime.now(UTC)))
        logger.info("tombstoned %d %s of connection %s", marked + placed, resource_type, connection_id)
        return marked + placed

    def live_ids(self, connection_id: str, resource_type: str) -> set[str]:
        """Ids not tombstoned (the local side of the BDX-31 reconciliation diff)."""
        out: set[str] = set()
        with self._read() as cur:
            cur.execute(
                "SELECT id FROM fhir_resources WHERE connection_id = %s AND resource_type = %s AND deleted_at IS NULL",
                (connection_id, resource_type),
            )
            for batch in _batches(cur):
                out.update(r[0] for r in batch)
        return out

    def key_counts(self, connection_id: str, resource_type: str | None = None) -> KeyCounts:
        """Rows, distinct keys and live rows of a connection (one type, or all): rows == keys is the BDX-24 key
        holding (on DuckDB nothing but the merge itself enforces it). Counted in SQL, never loaded into memory."""
        scope, params = "connection_id = %s", [connection_id]
        if resource_type is not None:
            scope, params = scope + " AND resource_type = %s", [*params, resource_type]
        with self._read() as cur:
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE deleted_at IS NULL), "
                f"(SELECT count(*) FROM (SELECT DISTINCT resource_type, id FROM fhir_resources WHERE {scope}) k) "
                f"FROM fhir_resources WHERE {scope}",
                (*params, *params),
            )
            row = cur.fetchone()
        rows, live, keys = (int(v) for v in row) if row else (0, 0, 0)
        return KeyCounts(rows=rows, keys=keys, live=live)

    # -- BDX-22 and quarantine --------------------------------------------------------------------------------
    def record_errors(
        self,
        connection_id: str,
        run_id: str,
        source: str,
        outcomes: Iterable[Mapping[str, Any] | bytes | str],
    ) -> ErrorCounts:
        """Store the OperationOutcomes of one bulk ``error`` file (idempotent per line); return severity counts."""
        counts = ErrorCounts()
        now = datetime.now(UTC)
        sql = (
            "INSERT INTO fhir_errors (connection_id, run_id, source, line_number, severity, code, diagnostics, "
            f"issue_count, outcome, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            f"CAST(%s AS {self.dialect.json}), %s) ON CONFLICT DO NOTHING"
        )
        with self._write(f"errors/{connection_id}") as cur:
            batch: list[tuple[Any, ...]] = []
            for r in outcome_rows(outcomes, counts):
                batch.append(
                    (connection_id, run_id, source, r.line_number, r.severity, r.code, r.diagnostics,
                     r.issue_count, r.outcome_json, now)
                )  # fmt: skip
                if len(batch) >= 1000:
                    cur.executemany(sql, batch)
                    batch = []
            if batch:
                cur.executemany(sql, batch)
        return counts

    def record_quarantine(self, landed: LandedFile) -> int:
        """Load a landed file's quarantine Parquet into ``fhir_quarantine`` (``upsert`` already does this)."""
        if landed.quarantine_path is None:
            return 0
        with self._write(f"{landed.connection_id}/{landed.resource_type}") as cur:
            return self._insert_quarantine(cur, Path(landed.quarantine_path))

    def _insert_quarantine(self, cur: Cursor, path: Path) -> int:
        if not path.is_file():
            raise LandedFileError(f"quarantine file {path} does not exist")
        pf = pq.ParquetFile(path)
        sql = (
            f"INSERT INTO fhir_quarantine ({', '.join(QUARANTINE_SCHEMA.names)}, recorded_at) "
            f"VALUES ({', '.join(['%s'] * (len(QUARANTINE_SCHEMA.names) + 1))}) ON CONFLICT DO NOTHING"
        )
        now = datetime.now(UTC)
        total = 0
        for batch in pf.iter_batches(batch_size=1000, columns=QUARANTINE_SCHEMA.names):
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            rows = [(*r, now) for r in zip(*cols, strict=True)]
            cur.executemany(sql, rows)
            total += len(rows)
        return total

    def record_attachment(self, connection_id: str, url: str, ref: AttachmentRef) -> None:
        """Remember which stored blob a DocumentReference/Binary ``url`` resolved to (joined into the view)."""
        with self._write(f"attachments/{connection_id}") as cur:
            cur.execute(
                "INSERT INTO fhir_attachments (connection_id, url, sha256, size, content_type, recorded_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (connection_id, url) DO UPDATE SET "
                "sha256 = excluded.sha256, size = excluded.size, content_type = excluded.content_type, "
                "recorded_at = excluded.recorded_at",
                (connection_id, url, ref.sha256, ref.size, ref.content_type, datetime.now(UTC)),
            )

    # -- analyst side -------------------------------------------------------------------------------------------
    def refresh_flat_tables(self) -> list[str]:
        """(Re)create the analyst views; returns their names."""
        with self._write("views") as cur:
            for name in VIEW_NAMES:
                cur.execute(f'DROP VIEW IF EXISTS "{name}"')
            for stmt in view_statements(self.dialect):
                cur.execute(stmt)
        return list(VIEW_NAMES)

    def summary(self) -> list[dict[str, Any]]:
        """Live and deleted counts per (connection, resource type)."""
        with self._read() as cur:
            cur.execute(
                "SELECT connection_id, resource_type, count(*) FILTER (WHERE deleted_at IS NULL), "
                "count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM fhir_resources "
                "GROUP BY connection_id, resource_type ORDER BY connection_id, resource_type"
            )
            return [
                {"connection_id": c, "resource_type": t, "live": int(live), "deleted": int(dead)}
                for batch in _batches(cur)
                for c, t, live, dead in batch
            ]

    def row_fingerprint(self) -> str:
        """sha256 over every row of ``fhir_resources`` in key order (content hash standing in for the JSON),
        including ``landed_at``: a replay that rewrites nothing leaves it identical."""
        digest = hashlib.sha256()
        with self._read() as cur:
            cur.execute(
                "SELECT connection_id, resource_type, id, tenant_id, version_id, last_updated, deleted_at, "
                "content_hash, landed_at, source, run_id, transaction_time FROM fhir_resources "
                "ORDER BY connection_id, resource_type, id"
            )
            for batch in _batches(cur):
                for row in batch:
                    digest.update(repr(tuple(_norm(v) for v in row)).encode())
                    digest.update(b"\n")
        return digest.hexdigest()

    def iter_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """Stream a read-only query's rows as dicts (``%s`` placeholders), in batches, for analysts and the demo."""
        with self._read() as cur:
            cur.execute(sql, params)
            names = cur.column_names()
            for batch in _batches(cur):
                for row in batch:
                    yield dict(zip(names, row, strict=True))

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _norm(value: object) -> object:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _batches(cur: Cursor) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        rows = cur.fetchmany(FETCH_ROWS)
        if not rows:
            return
        yield rows
