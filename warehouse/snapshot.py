"""The analyst snapshot: the DuckDB analyst views published as a read-only copy, so analysts never block syncs.

DuckDB admits one read-write process per file, or many read-only ones, never both: an analyst holding the
warehouse file open stalls every sync. So analysts never open it. After the views are refreshed, the writer
side reads the warehouse (shared lock, read-only connection) and writes a new *generation* next to it::

    <dir of warehouse.duckdb>/analyst/generations/<UTC stamp to the µs>-<short id>/analyst.duckdb   each view as a table
                                                                          /<view>.parquet  each view as Parquet
    <dir of warehouse.duckdb>/analyst/current -> generations/<newest>      (a symlink, swapped atomically)

A generation is built under a hidden name and renamed when complete; ``current`` is replaced by
``os.replace`` of a fresh symlink, so an analyst opening ``analyst/current/analyst.duckdb`` always finds a whole
snapshot. The newest ``keep`` generations stay; older ones are deleted (an analyst still holding one of their
files keeps reading it: POSIX unlinks only the name). Rows stream inside DuckDB (``CREATE TABLE ... AS``,
``COPY``), never through Python, so memory stays at DuckDB's limit whatever the table size.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from warehouse._duckdb_io import path_literal
from warehouse._filelock import file_lock
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.errors import InvalidInputError, WarehouseError
from warehouse.merge import Warehouse

__all__ = [
    "ANALYST_DIR",
    "AnalystSnapshot",
    "AnalystTable",
    "SnapshotError",
    "analyst_root",
    "describe_views",
    "generations",
    "publish_snapshot",
]

logger = logging.getLogger(__name__)
ANALYST_DIR = "analyst"
DATABASE_FILE = "analyst.duckdb"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*\Z")
_GENERATION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}\Z")


class SnapshotError(WarehouseError):
    """The analyst snapshot could not be published (the previous ``current`` generation is left as it was)."""


@dataclass(frozen=True)
class AnalystTable:
    """One analyst view: its rows, its columns (name, SQL type) and its Parquet copy (DuckDB snapshots only)."""

    name: str
    rows: int
    columns: tuple[tuple[str, str], ...]
    parquet: Path | None = None


@dataclass(frozen=True)
class AnalystSnapshot:
    """A published generation: ``database`` (each view a table) and ``current`` (the link analysts open)."""

    generation: Path
    current: Path
    tables: tuple[AnalystTable, ...]

    @property
    def database(self) -> Path:
        return self.generation / DATABASE_FILE


def analyst_root(warehouse_path: Path) -> Path:
    """``<dir of the warehouse file>/analyst``: beside the warehouse, on the same file system."""
    return Path(warehouse_path).parent / ANALYST_DIR


def generations(root: Path) -> list[Path]:
    """Complete generations under ``root``, oldest first (names start with their UTC stamp)."""
    folder = root / "generations"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and _GENERATION.match(p.name))


def _checked(views: Sequence[str]) -> list[str]:
    bad = [v for v in views if not _NAME.match(v)]
    if bad or not views:
        raise InvalidInputError(f"analyst view names must be lower-case SQL identifiers, got {bad or 'none'}")
    return list(views)


def publish_snapshot(
    wh: DuckDBWarehouse, views: Sequence[str], *, keep: int = 3, now: datetime | None = None
) -> AnalystSnapshot:
    """Materialize ``views`` of the warehouse into a new generation, point ``current`` at it, prune old ones.

    Publishers take ``analyst/.publish.lock`` in turn; the warehouse is only read (its shared lock), so syncs
    wait for this read like for any other, and analysts, who hold only snapshot files, block nothing."""
    names = _checked(views)
    if keep < 1:
        raise InvalidInputError(f"keep must be at least 1 generation, got {keep}")
    root = analyst_root(wh.path)
    (root / "generations").mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".publish.lock", exclusive=True, timeout_s=wh.lock_timeout_s):
        stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")  # taken in turn: ordered
        final = root / "generations" / f"{stamp}-{uuid.uuid4().hex[:8]}"
        _remove_partial(root)
        building = root / "generations" / f".building-{final.name}"
        building.mkdir()
        try:
            built = _materialize(wh, names, building)
            building.rename(final)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        tables = tuple(AnalystTable(t.name, t.rows, t.columns, final / f"{t.name}.parquet") for t in built)
        current = _swap_current(root, final)
        _prune(root, keep, final)
    logger.info("published analyst snapshot %s (%d tables)", final.name, len(tables))
    return AnalystSnapshot(generation=final, current=current, tables=tables)


def _materialize(wh: DuckDBWarehouse, names: list[str], folder: Path) -> list[AnalystTable]:
    """Each view into a table of ``analyst.duckdb`` (one attached, brand-new file) and a Parquet file."""
    tables: list[AnalystTable] = []
    with wh._read() as cur:
        cur.execute(f"ATTACH {path_literal(folder / DATABASE_FILE)} AS analyst_snapshot (READ_WRITE)")
        try:
            for name in names:
                cur.execute(f'CREATE TABLE analyst_snapshot."{name}" AS SELECT * FROM "{name}"')
                parquet = folder / f"{name}.parquet"
                cur.execute(f'COPY analyst_snapshot."{name}" TO {path_literal(parquet)} (FORMAT parquet)')
                cur.execute(f'SELECT count(*) FROM analyst_snapshot."{name}"')
                row = cur.fetchone()
                cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = "
                    "'analyst_snapshot' AND table_name = %s ORDER BY ordinal_position",
                    (name,),
                )
                columns = tuple((str(c), str(t)) for c, t in cur.fetchmany(10_000))
                tables.append(AnalystTable(name, int(row[0]) if row else 0, columns, parquet))
        finally:
            cur.execute("DETACH analyst_snapshot")
    return tables


def describe_views(wh: Warehouse, views: Sequence[str]) -> list[AnalystTable]:
    """Rows and columns of each view as the warehouse itself serves it (PostgreSQL: analysts query it live)."""
    described: list[AnalystTable] = []
    with wh._read() as cur:
        for name in _checked(views):
            cur.execute(f'SELECT count(*) FROM "{name}"')
            row = cur.fetchone()
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position",
                (name,),
            )
            columns = tuple((str(c), str(t)) for c, t in cur.fetchmany(10_000))
            described.append(AnalystTable(name, int(row[0]) if row else 0, columns))
    return described


def _swap_current(root: Path, target: Path) -> Path:
    """Point ``root/current`` at ``target`` in one ``rename`` (``os.replace``): a reader sees the old or the
    new generation, never neither."""
    current = root / "current"
    temp = root / f".current-{uuid.uuid4().hex[:8]}"
    temp.symlink_to(Path("generations") / target.name, target_is_directory=True)
    try:
        temp.replace(current)  # rename(2): os.replace
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise SnapshotError(f"could not point {current} at {target.name}: {exc}") from exc
    return current


def _remove_partial(root: Path) -> None:
    """Generations a crashed publisher left half-built (only one publisher runs at a time: the lock)."""
    for stale in (root / "generations").glob(".building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for link in root.glob(".current-*"):
        link.unlink(missing_ok=True)


def _prune(root: Path, keep: int, newest: Path) -> None:
    """Delete all but the newest ``keep`` generations (never the one just published)."""
    for old in generations(root)[:-keep]:
        if old != newest:
            shutil.rmtree(old, ignore_errors=True)
            logger.info("removed analyst snapshot generation %s", old.name)
