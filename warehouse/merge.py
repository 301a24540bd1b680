"""The merge engine: BDX-24 upserts and BDX-21 tombstones, written once over a tiny cursor protocol.

``Warehouse`` merges landed Parquet files into ``fhir_resources`` under the newer-or-equal rule and soft-deletes
ids; the side tables (warehouse/_records.py) and the read side (warehouse/_reads.py) are its other halves. A
backend (warehouse/duckdb_backend.py, warehouse/postgres_backend.py) supplies transactions and staging.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pyarrow.parquet as pq

from warehouse import _sql
from warehouse._cursor import Cursor
from warehouse._purge import Purge
from warehouse._reads import KeyCounts, Reads
from warehouse._records import Records
from warehouse.errors import InvalidInputError, LandedFileError, SchemaVersionError
from warehouse.landed import LANDING_SCHEMA, LandedFile

__all__ = ["Cursor", "KeyCounts", "UpsertStats", "Warehouse"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpsertStats:
    """Exact outcome of one upsert, per distinct id: ``unchanged`` includes identical replays and older versions
    that were ignored; ``duplicates`` counts extra rows for an id already in the same file (last one won)."""

    inserted: int
    updated: int
    unchanged: int
    duplicates: int = 0


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


class Warehouse(Records, Reads, Purge):
    """``fhir_resources`` plus errors, quarantine, attachments and analyst views, on DuckDB or PostgreSQL."""

    # -- backend hooks (``_write`` and ``_read`` come from warehouse/_cursor.py) ----------------------------------
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

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
