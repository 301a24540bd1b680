"""``WarehouseResource``: the analytical warehouse a step opens, with the DuckDB settings read at start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import ConfigurableResource
from pydantic import Field, field_validator

from engine.errors import PipelineConfigurationError
from engine.warehouse_settings import (
    DUCKDB_MEMORY_LIMIT_ENV,
    DUCKDB_THREADS_ENV,
    MAX_DUCKDB_THREADS,
    duckdb_memory_limit,
)
from warehouse import Warehouse, open_warehouse

__all__ = ["WarehouseResource"]


class WarehouseResource(ConfigurableResource["WarehouseResource"]):
    """The analytical warehouse: a DuckDB file path or a ``postgresql+psycopg://`` URL (WAREHOUSE_URL)."""

    target: str = Field(description="DuckDB path or Postgres URL of the warehouse.")
    lock_timeout_s: float = Field(
        default=300.0, gt=0, allow_inf_nan=False, description="Wait this long for another writer's lock."
    )
    # None: the warehouse's defaults; ``default_resources`` sets them from the settings. PostgreSQL ignores them.
    duckdb_memory_limit: str | None = Field(
        default=None,
        description=f"DuckDB memory_limit of each connection, e.g. 128MB or 1GiB ({DUCKDB_MEMORY_LIMIT_ENV}; "
        "the merge raises it for one large resource by itself; Bulk merge groups run at half of it, falling back "
        "to all of it).",
    )
    duckdb_threads: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DUCKDB_THREADS,
        description=f"DuckDB threads; unset: the cores this process may run on (its CPU affinity) here, while a "
        "sync step's connection leaves the "
        f"Bulk landing threads their cores ({DUCKDB_THREADS_ENV}).",
    )

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _check_memory_limit(cls, value: str | None) -> str | None:
        """The settings' own rule (at least 16 MiB, a size DuckDB reads): a run's config takes no other."""
        if value is None:
            return None
        try:
            return duckdb_memory_limit({DUCKDB_MEMORY_LIMIT_ENV: value})
        except PipelineConfigurationError as exc:
            raise ValueError(str(exc).removeprefix(f"{DUCKDB_MEMORY_LIMIT_ENV}=")) from None

    @contextmanager
    def open(self, *, read_only: bool = False) -> Iterator[Warehouse]:
        """Open for one step and always close, so the next writer process can take the DuckDB file."""
        wh = open_warehouse(
            self.target,
            read_only=read_only,
            lock_timeout_s=self.lock_timeout_s,
            duckdb_memory_limit=self.duckdb_memory_limit,
            duckdb_threads=self.duckdb_threads,
        )
        try:
            yield wh
        finally:
            wh.close()
