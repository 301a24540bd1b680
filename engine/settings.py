"""Configuration of the Dagster layer, read once from environment variables (documented in docs/PIPELINES.md).

| variable | default |
|---|---|
| ``EHRSYNC_STATE_DIR`` (or ``EHRSYNC_HOME``) | ``var/demo`` |
| ``DATABASE_URL`` (or ``EHRSYNC_DATABASE_URL``) | ``sqlite:///<state>/app.db`` |
| ``WAREHOUSE_URL`` | ``<state>/warehouse.duckdb`` |
| ``EHRSYNC_SYNC_WINDOWS`` | none (JSON ``{"epic": "22:00-06:00"}``) |
| ``EHRSYNC_QUARANTINE_MAX_RATIO`` | ``0.01`` (share of fetched lines that may be quarantined) |
| ``EHRSYNC_SYNC_OVERLAP_SECONDS`` | ``300`` (incremental searches start this long before the stored mark, BDX-28) |
| ``EHRSYNC_KEEPALIVE_IDLE_DAYS`` | ``7`` (the daily keepalive refreshes grants unused this long; 1..89) |
| ``EHRSYNC_FETCH_ALLOWED_HOSTS`` | none (``files.clinic.local,10.0.0.5:8443``: private bulk-file/attachment hosts) |
| ``EHRSYNC_MAX_RESOURCE_BYTES`` | ``67108864`` (read by the landing step; checked here, 1024..268435456) |
| ``EHRSYNC_MAX_RESPONSE_BYTES`` | ``67108864`` (read by the connectors; checked here: at least the resource limit) |
| ``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS`` | ``30`` (read when a step takes a connection's lock; checked here) |
| ``EHRSYNC_STEP_BUDGET_S``, ``EHRSYNC_REQUEST_DEADLINE_S`` | read by the engine and connectors; checked here |
| ``EHRSYNC_BULK_MAX_FILE_BYTES``, ``EHRSYNC_MIN_FREE_DISK_BYTES`` | read by the Bulk steps; checked here |

``INTEGRATIONS_TOKEN_ENC_KEY`` is read by ``store.TokenCipher.from_env`` when a run opens the vault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.budgets import DEFAULT_MAX_RESPONSE_BYTES, env_number
from connectors.errors import ConfigurationError
from engine.errors import PipelineConfigurationError
from engine.sync_windows import SyncWindow, parse_sync_windows
from warehouse.errors import InvalidInputError
from warehouse.limits import MAX_RESOURCE_ENV, max_resource_bytes

__all__ = [
    "DEFAULT_STATE_DIR",
    "MAX_KEEPALIVE_IDLE_DAYS",
    "RESPONSE_BYTES_ENV",
    "PipelineSettings",
    "check_size_limits",
    "check_warehouse_url",
]

DEFAULT_STATE_DIR = "var/demo"
# Grants lapse after about 90 days unused (eCW refresh tokens, Oracle Health offline_access): stay below that.
MAX_KEEPALIVE_IDLE_DAYS = 89
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*(?::\d{1,5})?")


_WAREHOUSE_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://", "duckdb:///")


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
    if path.is_dir():
        raise PipelineConfigurationError(f"WAREHOUSE_URL {value!r} is a folder, not a DuckDB file")
    parent = next((p for p in path.absolute().parents if p.exists()), None)  # the file itself may exist
    if parent is not None and not parent.is_dir():
        raise PipelineConfigurationError(f"WAREHOUSE_URL {value!r} lies under {str(parent)!r}, which is a file")
    return value


RESPONSE_BYTES_ENV = "EHRSYNC_MAX_RESPONSE_BYTES"


def _response_bytes(env: Mapping[str, str]) -> int:
    """``EHRSYNC_MAX_RESPONSE_BYTES`` read as the connectors read it (``env_number``), at least 1 byte."""
    try:
        value = env_number(RESPONSE_BYTES_ENV, DEFAULT_MAX_RESPONSE_BYTES, minimum=0, env=env)
    except ConfigurationError:
        value = 0.0
    if not value >= 1:
        raw = env.get(RESPONSE_BYTES_ENV, "").strip()
        raise PipelineConfigurationError(f"{RESPONSE_BYTES_ENV}={raw[:40]!r} is not a number of bytes of at least 1")
    return int(value)


# Numbers the engine reads lazily with ``connectors.budgets.env_number`` (a finite number above ``minimum``):
# name -> (minimum, what it bounds). The settings check them at start with that same reader, on the mapping the
# settings load from.
ENGINE_NUMBERS: dict[str, tuple[float, str]] = {
    "EHRSYNC_STEP_BUDGET_S": (0.0, "seconds one sync step may take"),
    "EHRSYNC_REQUEST_DEADLINE_S": (0.0, "seconds one request to the EHR may take"),
    "EHRSYNC_BULK_MAX_FILE_BYTES": (0.0, "bytes of one bulk file"),
    "EHRSYNC_MIN_FREE_DISK_BYTES": (-1.0, "bytes a download leaves free on disk"),
}


def _check_engine_numbers(env: Mapping[str, str]) -> None:
    for name, (minimum, what) in ENGINE_NUMBERS.items():
        try:
            env_number(name, 1.0, minimum=minimum, env=env)  # the engine's own reader and rule
        except ConfigurationError:
            raw = env.get(name, "").strip()
            raise PipelineConfigurationError(
                f"{name}={raw[:40]!r} is not a finite number greater than {minimum:g} ({what})"
            ) from None


def check_size_limits(env: Mapping[str, str]) -> None:
    """The byte limits and the connection lock wait, read lazily by the steps, checked when the settings load:
    a malformed value, or a response limit below the resource limit (a search page carrying one resource near
    the resource limit would then fail whole, ``response_too_large``), stops the start with one line."""
    from engine.connection_lock import lock_wait_seconds  # the engine's own reader (imported late: heavy)

    try:
        resource = max_resource_bytes(env)
    except InvalidInputError as exc:
        raise PipelineConfigurationError(str(exc)) from None
    response = _response_bytes(env)
    if response < resource:
        raise PipelineConfigurationError(
            f"{RESPONSE_BYTES_ENV}={response} is below {MAX_RESOURCE_ENV}={resource}: a search page carrying a "
            f"resource near the resource limit would fail whole; raise {RESPONSE_BYTES_ENV} to at least {resource} "
            f"or lower {MAX_RESOURCE_ENV}"
        )
    lock_wait_seconds(env)
    _check_engine_numbers(env)


@dataclass(frozen=True)
class PipelineSettings:
    state_dir: Path
    database_url: str
    warehouse_url: str
    sync_windows: Mapping[str, SyncWindow] = field(default_factory=dict)
    sync_windows_raw: str = ""
    quarantine_max_ratio: float = 0.01
    overlap_seconds: int = 300
    keepalive_idle_days: int = 7
    fetch_allowed_hosts: tuple[str, ...] = ()

    @property
    def landing_dir(self) -> Path:
        return self.state_dir / "landing"

    @property
    def attachments_dir(self) -> Path:
        return self.state_dir / "attachments"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster_home"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        """Read the settings; a malformed value raises ``PipelineConfigurationError`` naming the variable."""
        env = os.environ if env is None else env
        raw_state = env.get("EHRSYNC_STATE_DIR") or env.get("EHRSYNC_HOME") or DEFAULT_STATE_DIR
        state_dir = Path(raw_state).expanduser().resolve()
        database_url = env.get("DATABASE_URL") or env.get("EHRSYNC_DATABASE_URL") or f"sqlite:///{state_dir / 'app.db'}"
        warehouse_url = env.get("WAREHOUSE_URL") or str(state_dir / "warehouse.duckdb")
        check_warehouse_url(warehouse_url)
        raw_ratio = env.get("EHRSYNC_QUARANTINE_MAX_RATIO", "0.01")
        try:
            ratio = float(raw_ratio)
        except ValueError as exc:
            raise PipelineConfigurationError(
                f"EHRSYNC_QUARANTINE_MAX_RATIO={raw_ratio!r} is not a number between 0 and 1"
            ) from exc
        if not 0.0 <= ratio <= 1.0:
            raise PipelineConfigurationError(f"EHRSYNC_QUARANTINE_MAX_RATIO={raw_ratio!r} is not between 0 and 1")
        raw_overlap = env.get("EHRSYNC_SYNC_OVERLAP_SECONDS", "300")
        if not raw_overlap.isdigit() or int(raw_overlap) > 86_400:
            raise PipelineConfigurationError(
                f"EHRSYNC_SYNC_OVERLAP_SECONDS={raw_overlap!r} is not a whole number of seconds from 0 to 86400"
            )
        raw_idle = env.get("EHRSYNC_KEEPALIVE_IDLE_DAYS", "7")
        if not (raw_idle.isascii() and raw_idle.isdigit()) or not 1 <= int(raw_idle) <= MAX_KEEPALIVE_IDLE_DAYS:
            raise PipelineConfigurationError(
                f"EHRSYNC_KEEPALIVE_IDLE_DAYS={raw_idle!r} is not a whole number of days from 1 to "
                f"{MAX_KEEPALIVE_IDLE_DAYS} (grants lapse after about 90 days unused)"
            )
        check_size_limits(env)
        raw_hosts = env.get("EHRSYNC_FETCH_ALLOWED_HOSTS", "").split(",")
        fetch_hosts = tuple(h.strip().lower() for h in raw_hosts if h.strip())
        bad = [h for h in fetch_hosts if not _HOST.fullmatch(h)]
        if bad:
            raise PipelineConfigurationError(
                f"EHRSYNC_FETCH_ALLOWED_HOSTS names {bad[0]!r}, which is not a host or host:port (no scheme or path)"
            )
        return cls(
            state_dir=state_dir,
            database_url=database_url,
            warehouse_url=warehouse_url,
            sync_windows=parse_sync_windows(env.get("EHRSYNC_SYNC_WINDOWS")),
            sync_windows_raw=env.get("EHRSYNC_SYNC_WINDOWS", ""),
            quarantine_max_ratio=ratio,
            overlap_seconds=int(raw_overlap),
            keepalive_idle_days=int(raw_idle),
            fetch_allowed_hosts=fetch_hosts,
        )
