"""``open_warehouse``: one entry point that picks the backend from the target string."""

from __future__ import annotations

from pathlib import Path

from warehouse.errors import WarehouseTargetError
from warehouse.merge import Warehouse

__all__ = ["open_warehouse"]


def open_warehouse(
    target: str | Path,
    *,
    read_only: bool = False,
    lock_timeout_s: float = 300.0,
    duckdb_memory_limit: str | None = None,
    duckdb_threads: int | None = None,
) -> Warehouse:
    """A path or ``duckdb:///path`` (four slashes for an absolute path, as in SQLAlchemy) -> DuckDB;
    ``postgresql://`` / ``postgresql+psycopg://`` -> PostgreSQL.

    ``duckdb_memory_limit`` (DuckDB size text) and ``duckdb_threads`` configure a DuckDB warehouse's connections
    (None: its defaults, 128MB and the machine's cores); PostgreSQL ignores them (the server sizes itself)."""

    def duckdb(path: Path) -> Warehouse:
        from warehouse.duckdb_backend import DEFAULT_MEMORY_LIMIT, DuckDBWarehouse

        memory = duckdb_memory_limit if duckdb_memory_limit is not None else DEFAULT_MEMORY_LIMIT
        return DuckDBWarehouse(
            path, read_only=read_only, lock_timeout_s=lock_timeout_s, memory_limit=memory, threads=duckdb_threads
        )

    if isinstance(target, Path):
        return duckdb(target)
    if not isinstance(target, str) or not target:
        raise WarehouseTargetError("warehouse target must be a path or a database URL")
    if target.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        from warehouse.postgres_backend import PostgresWarehouse

        # A reader's lock wait is bounded like DuckDB's (a writer's is not: its transactions wait their turn).
        return PostgresWarehouse(target, read_only=read_only, lock_timeout_s=lock_timeout_s if read_only else None)
    if target.startswith("duckdb://"):
        # SQLAlchemy's spelling: duckdb:///relative/file.duckdb, duckdb:////absolute/file.duckdb
        if not target.startswith("duckdb:///") or target in ("duckdb:///", "duckdb:////"):
            raise WarehouseTargetError("duckdb:// target names no file (use duckdb:///path/to/file.duckdb)")
        return duckdb(Path(target[len("duckdb:///") :]))
    if "://" in target:
        raise WarehouseTargetError(
            f"unsupported warehouse URL scheme {target.split('://', 1)[0]!r} (use a path, duckdb:///..., "
            "or postgresql+psycopg://...)"
        )
    return duckdb(Path(target))
