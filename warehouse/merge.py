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
    def upsert(self, landed: LandedFile) -> UpsertStats:
        """Merge one landed file into ``fhir_resources`` (and its quarantine into ``fhir_quarantine``), BDX-24."""

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
    @property
    def in_transaction(self) -> bool:
        """Inside ``transaction()``: the writes join it instead of committing each on its own."""
        return False

    def transaction(self) -> AbstractContextManager[None]:
        """Make the writes inside one transaction, committed at the end (all or nothing): a Bulk export's merge
        group (engine/bulk_merge_group.py; on DuckDB a commit per small file wrote each through the log and doubled
        the database file). Backends whose commits are cheap need nothing here: each write stays its own
        transaction. A DuckDB transaction that runs out of the memory limit raises ``WarehouseMemoryError``."""
        return nullcontext()

    def lean_memory(self) -> AbstractContextManager[bool]:
        """A smaller database memory limit for the writes inside, or nothing; yields whether it lowered one. A Bulk
        merge group holds its transaction open over many files, and DuckDB fills its buffer pool to the limit
        meanwhile: the group runs at half the limit and falls back to the whole one, one file at a time, if it
        runs out (engine/bulk_merge_group.py). Backends without an engine-side limit need nothing here."""
        return nullcontext(False)

    @staticmethod
    def _log_stats(landed: LandedFile, stats: UpsertStats) -> None:
        logger.info(
            "upserted %s/%s from %s: %d inserted, %d updated, %d unchanged",
            landed.connection_id,
            landed.resource_type,
            Path(landed.path).name,
            stats.inserted,
            stats.updated,
            stats.unchanged,
        )

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
        """Soft-delete ids; returns how many became deleted. Rows updated after ``deleted_at``, or answered after it
        (``transaction_time``), stay live, and
        unknown ids get a placeholder tombstone so a late, older copy cannot resurrect them."""
        when = _aware("deleted_at", deleted_at)
        with self._write(f"{connection_id}/{resource_type}") as cur:
            self._stage_ids(cur, connection_id, resource_type, ids)
            mark, insert = _sql.tombstone_sql()
            marked = cur.execute_count(mark, (when, when, when))
            placed = cur.execute_count(insert, (tenant_id, when, datetime.now(UTC)))
        logger.info("tombstoned %d %s of connection %s", marked + placed, resource_type, connection_id)
        return marked + placed

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
