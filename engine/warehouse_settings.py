"""The warehouse's settings: ``WAREHOUSE_URL`` checked, and the DuckDB and merge knobs an operator may turn.

Parsed once at start (``engine.settings.EngineLimits``), so a malformed value stops the start with one line
naming the variable; the values reach the steps through the Dagster resources, never read again during a run.

- ``EHRSYNC_DUCKDB_MEMORY_LIMIT``: DuckDB's ``memory_limit`` of every warehouse connection (default 128MB). The
  merge raises it by itself for a chunk holding one large resource (``warehouse.limits.LARGE_ROW_MEMORY_FACTOR``);
  a Bulk merge group runs at half of it and falls back to all of it (``engine.bulk_merge_group``).
- ``EHRSYNC_DUCKDB_THREADS``: DuckDB's ``threads`` (unset: a sync step takes the cores the Bulk landing threads
  leave, ``SyncEnvironment.default_duckdb_threads``; other steps the cores the process may run on, its CPU
  affinity; more buys nothing).
- ``EHRSYNC_BULK_MERGE_GROUP_BYTES``: landed Bulk files merged per warehouse transaction (default 256 MiB).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from engine.env_numbers import whole_number
from engine.errors import PipelineConfigurationError
from engine.setting_defaults import DEFAULT_BULK_MERGE_GROUP_BYTES
from warehouse.errors import InvalidInputError
from warehouse.limits import memory_mib

__all__ = [
    "DEFAULT_DUCKDB_MEMORY_LIMIT",
    "DUCKDB_MEMORY_LIMIT_ENV",
    "DUCKDB_THREADS_ENV",
    "MAX_DUCKDB_THREADS",
    "MERGE_GROUP_BYTES_ENV",
    "MIN_DUCKDB_MEMORY_MIB",
    "bulk_merge_group_bytes",
    "check_warehouse_url",
    "duckdb_memory_limit",
    "duckdb_threads",
]

DUCKDB_MEMORY_LIMIT_ENV = "EHRSYNC_DUCKDB_MEMORY_LIMIT"
DUCKDB_THREADS_ENV = "EHRSYNC_DUCKDB_THREADS"
MERGE_GROUP_BYTES_ENV = "EHRSYNC_BULK_MERGE_GROUP_BYTES"
DEFAULT_DUCKDB_MEMORY_LIMIT = "128MB"  # warehouse.duckdb_backend.DuckDBWarehouse's own default
MIN_DUCKDB_MEMORY_MIB = 16
MAX_DUCKDB_THREADS = 256
# The sizes both ``warehouse.limits.memory_mib`` and DuckDB read alike: a number and a unit (DuckDB refuses a bare
# number and ``Mi``; KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024). Nothing else reaches the SQL
# ``SET memory_limit`` that restores the limit after a large resource's merge.
_SIZE = re.compile(r"\d+(?:\.\d+)?\s*(?:[KMGT](?:i?B)?|B)", re.IGNORECASE)
_WAREHOUSE_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://", "duckdb:///")


def duckdb_memory_limit(env: Mapping[str, str]) -> str:
    """``EHRSYNC_DUCKDB_MEMORY_LIMIT`` as DuckDB size text of at least 16 MiB (``128MB``, ``1GiB``)."""
    raw = env.get(DUCKDB_MEMORY_LIMIT_ENV, DEFAULT_DUCKDB_MEMORY_LIMIT).strip()
    try:
        mib = memory_mib(raw) if _SIZE.fullmatch(raw) else 0
    except InvalidInputError:
        mib = 0
    if mib < MIN_DUCKDB_MEMORY_MIB:
        raise PipelineConfigurationError(
            f"{DUCKDB_MEMORY_LIMIT_ENV}={raw[:40]!r} is not a DuckDB memory size of at least "
            f"{MIN_DUCKDB_MEMORY_MIB} MiB, such as '128MB' or '1GiB'"
        )
    return raw


def duckdb_threads(env: Mapping[str, str]) -> int | None:
    """``EHRSYNC_DUCKDB_THREADS``: a whole number 1..256, or None (unset: the defaults in the module docstring)."""
    if DUCKDB_THREADS_ENV not in env:
        return None
    return whole_number(env, DUCKDB_THREADS_ENV, 0, 1, MAX_DUCKDB_THREADS, "threads; unset: chosen from the cores")


def bulk_merge_group_bytes(env: Mapping[str, str]) -> int:
    """``EHRSYNC_BULK_MERGE_GROUP_BYTES``: a whole number of bytes, at least 1 (1: a transaction per file)."""
    what = "bytes of landed Bulk JSON merged per warehouse transaction"
    return whole_number(env, MERGE_GROUP_BYTES_ENV, DEFAULT_BULK_MERGE_GROUP_BYTES, 1, None, what)


def check_warehouse_url(value: str) -> str:
    """``WAREHOUSE_URL`` as ``warehouse.open_warehouse`` reads it, checked before any work starts."""
    if "://" in value:
        if not value.startswith(_WAREHOUSE_SCHEMES):
            scheme = value.split("://", 1)[0]
            raise PipelineConfigurationError(
                f"WAREHOUSE_URL scheme {scheme!r} is not supported: use a DuckDB file path, duckdb:///path, "
                "or postgresql+psycopg://user@host/db"
            )
        if value.startswith("duckdb:///") and value in ("duckdb:///", "duckdb:////"):
            raise PipelineConfigurationError("WAREHOUSE_URL duckdb:/// names no file (duckdb:///path/to/file.duckdb)")
        if not value.startswith("duckdb:///"):
            return value
        value = value[len("duckdb:///") :]
    path = Path(value).expanduser()
    try:  # a name too long, a folder closed to this user: the OS's reason, named, not a bare OSError
        is_dir = path.is_dir()
        parent = next((p for p in path.absolute().parents if p.exists()), None)  # the file itself may exist
    except OSError as exc:
        raise PipelineConfigurationError(
            f"WAREHOUSE_URL {value[:200]!r} cannot be looked at: {exc.strerror or exc}"
        ) from None
    if is_dir:
        raise PipelineConfigurationError(f"WAREHOUSE_URL {value!r} is a folder, not a DuckDB file")
    if parent is not None and not parent.is_dir():
        raise PipelineConfigurationError(f"WAREHOUSE_URL {value!r} lies under {str(parent)!r}, which is a file")
    return value
