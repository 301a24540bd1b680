"""Defaults of engine settings used by modules that are heavy to import (a run's environment, landing
retention), the byte counts' table and reader, and the landing retention's reader: kept apart so reading the
settings (``engine.settings``, every ``ehrsync`` command and Dagster process) loads none of those modules, which
bring the warehouse (pyarrow, DuckDB), httpx and the app database's models (issue 14)."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.budgets import DEFAULT_MAX_RESPONSE_BYTES, RESPONSE_BYTES_ENV, RESPONSE_BYTES_WHAT, env_whole_number
from connectors.bulk.file_limits import DEFAULT_MAX_FILE_BYTES, MAX_FILES_ENV, MAX_MANIFEST_FILES
from engine.env_numbers import whole_number

__all__ = [
    "DEFAULT_BULK_MAX_FILES",
    "DEFAULT_BULK_MAX_FILE_BYTES",
    "DEFAULT_BULK_MERGE_GROUP_BYTES",
    "DEFAULT_LANDING_RETENTION_DAYS",
    "DEFAULT_MIN_FREE_DISK_BYTES",
    "ENGINE_BYTES",
    "MAX_LANDING_RETENTION_DAYS",
    "bulk_max_files",
    "engine_bytes",
    "landing_retention_days",
]

DEFAULT_BULK_MAX_FILE_BYTES = DEFAULT_MAX_FILE_BYTES  # 10 GiB per bulk file (EHRSYNC_BULK_MAX_FILE_BYTES)
DEFAULT_BULK_MAX_FILES = MAX_MANIFEST_FILES  # files one Bulk export lands (EHRSYNC_BULK_MAX_FILES)
DEFAULT_MIN_FREE_DISK_BYTES = 1024**3  # downloads stop while less than 1 GiB is free (EHRSYNC_MIN_FREE_DISK_BYTES)
DEFAULT_BULK_MERGE_GROUP_BYTES = 256 * 1024 * 1024  # landed Bulk files per transaction (EHRSYNC_BULK_MERGE_GROUP_BYTES)
DEFAULT_LANDING_RETENTION_DAYS = 7  # merged landing files kept (EHRSYNC_LANDING_RETENTION_DAYS)
MAX_LANDING_RETENTION_DAYS = 3650

# Byte counts the engine reads with ``connectors.budgets.env_whole_number`` (a whole number of at least the minimum;
# unset or empty: the default): name -> (default, minimum, what it counts). The one source of each: a run's
# environment reads them (``engine.environment``), the settings check them at start (``engine.settings``).
ENGINE_BYTES: dict[str, tuple[int, int, str]] = {
    RESPONSE_BYTES_ENV: (DEFAULT_MAX_RESPONSE_BYTES, 1, RESPONSE_BYTES_WHAT),
    "EHRSYNC_BULK_MAX_FILE_BYTES": (DEFAULT_BULK_MAX_FILE_BYTES, 1, "bytes of one bulk file"),
    "EHRSYNC_MIN_FREE_DISK_BYTES": (DEFAULT_MIN_FREE_DISK_BYTES, 0, "bytes left free on disk; 0: no check"),
}


def engine_bytes(name: str, env: Mapping[str, str] | None = None) -> int:
    """``name`` of ``ENGINE_BYTES`` from ``env`` (else ``os.environ``); a bad value: a ConfigurationError naming it."""
    default, minimum, what = ENGINE_BYTES[name]
    return env_whole_number(name, default, minimum=minimum, what=what, env=env)


def landing_retention_days(env: Mapping[str, str]) -> int:
    """``EHRSYNC_LANDING_RETENTION_DAYS``: days merged landing files are kept (0: removed once their merge commits)."""
    what = "days; 0: each landing file goes once its merge commits"
    name = "EHRSYNC_LANDING_RETENTION_DAYS"
    return whole_number(env, name, DEFAULT_LANDING_RETENTION_DAYS, 0, MAX_LANDING_RETENTION_DAYS, what)


def bulk_max_files(env: Mapping[str, str]) -> int:
    """``EHRSYNC_BULK_MAX_FILES``: the most files one Bulk export's manifest may list (more is an invalid manifest,
    the job cancelled); a whole number of at least 1. An operator raises it for a larger export, at ~4 KB of memory
    a file while its manifest is stored (docs/PERFORMANCE.md, "Bulk manifests of many files")."""
    what = "files one Bulk export's manifest may list"
    return whole_number(env, MAX_FILES_ENV, DEFAULT_BULK_MAX_FILES, 1, None, what)
