"""The engine's view of the settings: ``settings.AppSettings`` (read once per process) checked and parsed.

Every variable is listed in docs/PIPELINES.md; the locations (state, app database, warehouse, Dagster home) are
resolved by ``settings.AppSettings`` so the CLI, the auth service and the Dagster code location agree. The
tuning variables are checked here with the readers the engine, connectors and warehouse use, so a malformed
value stops the start with one line naming it, and the parsed values travel to the steps through the Dagster
resources (``pipelines.resources.default_resources``) instead of being read again during a run.

``INTEGRATIONS_TOKEN_ENC_KEY`` is read by ``store.TokenCipher.from_env`` when a run opens the vault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.budgets import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_DEADLINE_S,
    DEFAULT_STEP_BUDGET_S,
    RESPONSE_BYTES_ENV,
    env_number,
)
from connectors.bulk.file_limits import (
    DEFAULT_FILE_DEADLINE_S,
    DEFAULT_LOW_SPEED,
    LOW_SPEED_WINDOW_ENV,
    file_deadline_from_env,
    low_speed_from_env,
)
from connectors.errors import ConfigurationError
from connectors.transport.low_speed import LowSpeedLimit
from engine.analyst_settings import AnalystSettings
from engine.batch_size import DEFAULT_BATCH_SIZE, batch_size_from_env
from engine.connection_lock import DEFAULT_LOCK_WAIT_S, lock_wait_seconds
from engine.env_numbers import whole_number
from engine.errors import PipelineConfigurationError
from engine.fetch_hosts import fetch_allowed_hosts
from engine.freshness import DEFAULT_GRACE_MINUTES, grace_minutes_from_env
from engine.retry_backoff import backoff_from_env
from engine.run_retention import RunRetention
from engine.scheduling import RetryBackoff
from engine.setting_defaults import (
    DEFAULT_BULK_MAX_FILE_BYTES,
    DEFAULT_BULK_MAX_FILES,
    DEFAULT_BULK_MERGE_GROUP_BYTES,
    DEFAULT_LANDING_RETENTION_DAYS,
    DEFAULT_MIN_FREE_DISK_BYTES,
    ENGINE_BYTES,
    bulk_max_files,
    engine_bytes,
    landing_retention_days,
)
from engine.sync_windows import SyncWindow, parse_sync_windows
from engine.warehouse_settings import (
    DEFAULT_DUCKDB_MEMORY_LIMIT,
    bulk_merge_group_bytes,
    check_warehouse_url,
    duckdb_memory_limit,
    duckdb_threads,
)
from settings import DEFAULT_STATE_DIR, AppSettings, load_app_settings
from warehouse.errors import InvalidInputError
from warehouse.limits import DEFAULT_MAX_RESOURCE_BYTES, MAX_RESOURCE_ENV, max_resource_bytes

if TYPE_CHECKING:  # reading the settings loads no httpx, pyarrow or DuckDB (tests/ehrsync/test_cli_imports.py)
    from connectors.transport import BodyBounds

__all__ = [
    "DEFAULT_STATE_DIR",
    "ENGINE_BYTES",
    "ENGINE_NUMBERS",
    "MAX_KEEPALIVE_IDLE_DAYS",
    "RESPONSE_BYTES_ENV",
    "EngineLimits",
    "PipelineSettings",
    "check_size_limits",
    "check_warehouse_url",
]

# Grants lapse after about 90 days unused (eCW refresh tokens, Oracle Health offline_access): stay below that.
MAX_KEEPALIVE_IDLE_DAYS = 89


def _bytes(env: Mapping[str, str], name: str) -> int:
    """``name`` of ``ENGINE_BYTES`` (``engine.setting_defaults``) read as a run's environment reads it; one line
    naming it when bad."""
    try:
        return engine_bytes(name, env)
    except ConfigurationError as exc:
        raise PipelineConfigurationError(str(exc)) from None


# Numbers the engine reads lazily with ``connectors.budgets.env_number`` (a finite number above ``minimum``):
# name -> (minimum, what it bounds). The settings check them at start with that same reader, on the mapping the
# settings load from.
ENGINE_NUMBERS: dict[str, tuple[float, str]] = {
    "EHRSYNC_STEP_BUDGET_S": (0.0, "seconds one sync step may take"),
    "EHRSYNC_REQUEST_DEADLINE_S": (0.0, "seconds one request to the EHR may take"),
    LOW_SPEED_WINDOW_ENV: (0.0, "seconds over which a bulk file's speed is averaged"),
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
    try:
        resource = max_resource_bytes(env)
    except InvalidInputError as exc:
        raise PipelineConfigurationError(str(exc)) from None
    response = _bytes(env, RESPONSE_BYTES_ENV)
    if response < resource:
        raise PipelineConfigurationError(
            f"{RESPONSE_BYTES_ENV}={response} is below {MAX_RESOURCE_ENV}={resource}: a search page carrying a "
            f"resource near the resource limit would fail whole; raise {RESPONSE_BYTES_ENV} to at least {resource} "
            f"or lower {MAX_RESOURCE_ENV}"
        )
    lock_wait_seconds(env)
    for name in ENGINE_BYTES:
        _bytes(env, name)
    _check_engine_numbers(env)
    try:
        low_speed_from_env(env)  # its rate may be 0 (no limit), not below; so may the file deadline
        file_deadline_from_env(env)
    except ConfigurationError as exc:
        raise PipelineConfigurationError(str(exc)) from None


@dataclass(frozen=True)
class EngineLimits:
    """Byte limits, budgets and waits the steps apply, parsed once at start (defaults: the engine's own)."""

    max_resource_bytes: int = DEFAULT_MAX_RESOURCE_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S
    step_budget_s: float = DEFAULT_STEP_BUDGET_S
    request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S
    bulk_max_file_bytes: int = DEFAULT_BULK_MAX_FILE_BYTES
    min_free_disk_bytes: int = DEFAULT_MIN_FREE_DISK_BYTES
    bulk_low_speed: LowSpeedLimit | None = DEFAULT_LOW_SPEED
    bulk_file_deadline_s: float | None = DEFAULT_FILE_DEADLINE_S  # 24 h per file's download
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT  # the warehouse's (engine.warehouse_settings)
    duckdb_threads: int | None = None  # None: see engine.warehouse_settings
    bulk_merge_group_bytes: int = DEFAULT_BULK_MERGE_GROUP_BYTES
    bulk_max_files: int = DEFAULT_BULK_MAX_FILES  # files one export's manifest may list (EHRSYNC_BULK_MAX_FILES)

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> EngineLimits:
        check_size_limits(env)
        return cls(
            max_resource_bytes=max_resource_bytes(env),
            max_response_bytes=_bytes(env, RESPONSE_BYTES_ENV),
            lock_wait_s=lock_wait_seconds(env),
            step_budget_s=env_number("EHRSYNC_STEP_BUDGET_S", DEFAULT_STEP_BUDGET_S, env=env),
            request_deadline_s=env_number("EHRSYNC_REQUEST_DEADLINE_S", DEFAULT_REQUEST_DEADLINE_S, env=env),
            bulk_max_file_bytes=_bytes(env, "EHRSYNC_BULK_MAX_FILE_BYTES"),
            min_free_disk_bytes=_bytes(env, "EHRSYNC_MIN_FREE_DISK_BYTES"),
            bulk_low_speed=low_speed_from_env(env),
            bulk_file_deadline_s=file_deadline_from_env(env),
            duckdb_memory_limit=duckdb_memory_limit(env),
            duckdb_threads=duckdb_threads(env),
            bulk_merge_group_bytes=bulk_merge_group_bytes(env),
            bulk_max_files=bulk_max_files(env),
        )

    def request_bounds(self) -> BodyBounds:
        """What bounds each request to the EHR: the JSON answer's size and the request's overall deadline."""
        from connectors.transport import BodyBounds

        return BodyBounds(self.max_response_bytes, self.request_deadline_s)

    @property
    def duckdb(self) -> tuple[str, int | None]:
        """DuckDB's memory limit and threads, as ``engine.purge.PurgeTargets.duckdb`` takes them."""
        return self.duckdb_memory_limit, self.duckdb_threads


def _ratio(env: Mapping[str, str]) -> float:
    raw = env.get("EHRSYNC_QUARANTINE_MAX_RATIO", "0.01")
    try:
        ratio = float(raw)
    except ValueError as exc:
        raise PipelineConfigurationError(
            f"EHRSYNC_QUARANTINE_MAX_RATIO={raw!r} is not a number between 0 and 1"
        ) from exc
    if not 0.0 <= ratio <= 1.0:
        raise PipelineConfigurationError(f"EHRSYNC_QUARANTINE_MAX_RATIO={raw!r} is not between 0 and 1")
    return ratio


def _overlap_seconds(env: Mapping[str, str]) -> int:
    return whole_number(env, "EHRSYNC_SYNC_OVERLAP_SECONDS", 300, 0, 86_400, "seconds")


def _idle_days(env: Mapping[str, str]) -> int:
    what = "days; grants lapse after about 90 days unused"
    return whole_number(env, "EHRSYNC_KEEPALIVE_IDLE_DAYS", 7, 1, MAX_KEEPALIVE_IDLE_DAYS, what)


@dataclass(frozen=True)
class PipelineSettings:
    """What the Dagster layer and the engine need, checked: build with ``from_app`` (or ``from_env``)."""

    state_dir: Path
    database_url: str
    warehouse_url: str
    sync_windows: Mapping[str, SyncWindow] = field(default_factory=dict)
    sync_windows_raw: str = ""
    quarantine_max_ratio: float = 0.01
    overlap_seconds: int = 300
    sync_batch_size: int = DEFAULT_BATCH_SIZE  # scheduled patient syncs per run (engine.batch_sync)
    keepalive_idle_days: int = 7
    freshness_grace_minutes: int = DEFAULT_GRACE_MINUTES  # sync_freshness checks (engine.freshness)
    landing_retention_days: int = DEFAULT_LANDING_RETENTION_DAYS  # merged landing files kept (engine.landing_retention)
    run_retention: RunRetention = field(default_factory=RunRetention)  # Dagster runs kept, pruning schedule
    analyst: AnalystSettings = field(default_factory=AnalystSettings)  # analyst views: snapshots, debounce, locks
    write_enabled: bool = False  # SMART_ENABLE_WRITE: the service-wide switch the note write-back checks first
    fetch_allowed_hosts: tuple[str, ...] = ()
    retry_backoff: RetryBackoff = field(default_factory=lambda: backoff_from_env({}))
    limits: EngineLimits = field(default_factory=EngineLimits)
    dagster_home_dir: Path | None = None  # DAGSTER_HOME when set
    # The variable that named the app database / warehouse (None: the state default). When the settings were read
    # from this process's environment (``from_process``), resources bind them as ``dagster.EnvVar`` so a URL's
    # password is not shown as resource config in the UI.
    database_url_variable: str | None = None
    warehouse_url_variable: str | None = None
    from_process: bool = False
    vault_key_variables: tuple[str, ...] = ()  # which vault key variables are set (bound by name, never copied)

    @property
    def landing_dir(self) -> Path:
        return self.state_dir / "landing"

    @property
    def attachments_dir(self) -> Path:
        return self.state_dir / "attachments"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance directory: ``DAGSTER_HOME`` when the operator set it, else ``<state>/dagster_home``."""
        return self.dagster_home_dir if self.dagster_home_dir is not None else self.state_dir / "dagster_home"

    @classmethod
    def from_app(cls, app: AppSettings, *, from_process: bool = False) -> PipelineSettings:
        """Check and parse ``app``; a malformed value raises ``PipelineConfigurationError`` naming the variable."""
        env = app.engine_values()
        warehouse_url = app.warehouse_url
        check_warehouse_url(warehouse_url)
        return cls(
            state_dir=app.state_dir,
            database_url=app.database_url,
            warehouse_url=warehouse_url,
            quarantine_max_ratio=_ratio(env),
            overlap_seconds=_overlap_seconds(env),
            sync_batch_size=batch_size_from_env(env),
            keepalive_idle_days=_idle_days(env),
            freshness_grace_minutes=grace_minutes_from_env(env),
            landing_retention_days=landing_retention_days(env),
            run_retention=RunRetention.parse(env),
            analyst=AnalystSettings.parse(env),
            write_enabled=app.SMART_ENABLE_WRITE,
            limits=EngineLimits.parse(env),
            fetch_allowed_hosts=fetch_allowed_hosts(env),
            sync_windows=parse_sync_windows(env.get("EHRSYNC_SYNC_WINDOWS")),
            sync_windows_raw=env.get("EHRSYNC_SYNC_WINDOWS", ""),
            retry_backoff=backoff_from_env(env),
            dagster_home_dir=app.dagster_home if app.DAGSTER_HOME.strip() else None,
            database_url_variable=app.database_url_variable,
            warehouse_url_variable="WAREHOUSE_URL" if app.WAREHOUSE_URL.strip() else None,
            from_process=from_process,
            vault_key_variables=app.vault_key_variables,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        """``from_app`` over the process environment (or ``env``), read once through ``settings``."""
        return cls.from_app(load_app_settings(env), from_process=env is None)
