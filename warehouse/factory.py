"""``open_warehouse``: one entry point that picks the backend from the target string."""

from __future__ import annotations

from pathlib import Path

from warehouse.errors import WarehouseTargetError
from warehouse.merge import Warehouse

__all__ = ["open_warehouse"]


def open_warehouse(target: str | Path, *, read_only: bool = False, lock_timeout_s: float = 300.0) -> Warehouse:
    """A path or ``duckdb:///path`` (four slashes for an absolute path, as in SQLAlchemy) -> DuckDB;
    ``postgresql://`` / ``postgresql+psycopg://`` -> PostgreSQL."""
    if isinstance(target, Path):
        from warehouse.duckdb_backend import DuckDBWarehouse

        return DuckDBWarehouse(target, read_only=read_only, lock_timeout_s=lock_timeout_s)
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
        from warehouse.duckdb_backend import DuckDBWarehouse

        return DuckDBWarehouse(Path(target[len("duckdb:///") :]), read_only=read_only, lock_timeout_s=lock_timeout_s)
    if "://" in target:
        raise WarehouseTargetError(
            f"unsupported warehouse URL scheme {target.split('://', 1)[0]!r} (use a path, duckdb:///..., "
            "or postgresql+psycopg://...)"
        )
    from warehouse.duckdb_backend import DuckDBWarehouse

    return DuckDBWarehouse(Path(target), read_only=read_only, lock_timeout_s=lock_timeout_s)
