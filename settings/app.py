"""ehrsync's one settings object: where the state, the app database and the warehouse live, for every process.

The CLI, the auth service and the Dagster code location each build it once (``load_app_settings``) and pass it
down, so ``ehrsync db migrate``, ``ehrsync sync``, ``ehrsync auth serve`` and the Dagster daemon resolve the same
app database and warehouse for the same environment. Nothing else reads these variables.

| variable | default |
|---|---|
| ``EHRSYNC_STATE_DIR`` (or ``EHRSYNC_HOME``; the first wins) | ``var/demo`` (resolved to an absolute path) |
| ``DATABASE_URL`` (or ``EHRSYNC_DATABASE_URL``; ``DATABASE_URL`` wins) | ``sqlite:///<state>/app.db`` |
| ``WAREHOUSE_URL`` | ``<state>/warehouse.duckdb`` |
| ``DAGSTER_HOME`` | ``<state>/dagster_home`` |
| ``INTEGRATIONS_TOKEN_ENC_KEY``, ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` | unset (checked where the vault opens) |
| ``EHR_JWT_PRIVATE_KEY`` | unset (PEM text or a path; checked where a token is signed) |

The engine's tuning variables (``EHRSYNC_SYNC_WINDOWS``, the byte limits, budgets and retry delays) are carried
here as the operator wrote them; ``engine.settings.PipelineSettings`` checks them with the engine's own readers,
so their messages stay the engine's.

A location or an engine variable set to an empty or blank value is unset: ``FOO=`` in a compose file, or a
``${FOO}`` the host leaves unset, means its default (docs/PIPELINES.md). So does a blank secret (the vault's keys,
the signing key): it is never taken as a key, and a blank active key stops every process that needs it exactly as an
unset one does. The keys are checked where they are used; a blank ``SMART_ENABLE_WRITE`` is no boolean: it stops the
start, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.errors import ConfigurationError
from settings.locations import app_database_url_problem, state_dir_problem

__all__ = ["DEFAULT_STATE_DIR", "ENGINE_VARIABLES", "VAULT_KEY_HINT", "AppSettings", "load_app_settings"]

DEFAULT_STATE_DIR = "var/demo"
#: How to make a vault key: every process that finds none says it the same way.
VAULT_KEY_HINT = 'generate one with `python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"`'

# Read by the engine, the connectors and the warehouse (checked by engine.settings): carried as raw text.
ENGINE_VARIABLES = (
    "EHRSYNC_SYNC_WINDOWS",
    "EHRSYNC_QUARANTINE_MAX_RATIO",
    "EHRSYNC_SYNC_OVERLAP_SECONDS",
    "EHRSYNC_SYNC_BATCH_SIZE",
    "EHRSYNC_KEEPALIVE_IDLE_DAYS",
    "EHRSYNC_FETCH_ALLOWED_HOSTS",
    "EHRSYNC_MAX_RESOURCE_BYTES",
    "EHRSYNC_MAX_RESPONSE_BYTES",
    "EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS",
    "EHRSYNC_STEP_BUDGET_S",
    "EHRSYNC_REQUEST_DEADLINE_S",
    "EHRSYNC_BULK_MAX_FILE_BYTES",
    "EHRSYNC_BULK_MAX_FILES",
    "EHRSYNC_MIN_FREE_DISK_BYTES",
    "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S",
    "EHRSYNC_BULK_LOW_SPEED_WINDOW_S",
    "EHRSYNC_BULK_FILE_DEADLINE_S",
    "EHRSYNC_BULK_MERGE_GROUP_BYTES",
    "EHRSYNC_DUCKDB_MEMORY_LIMIT",
    "EHRSYNC_DUCKDB_THREADS",
    "EHRSYNC_RETRY_BASE_SECONDS",
    "EHRSYNC_RETRY_CAP_SECONDS",
    "EHRSYNC_FRESHNESS_GRACE_MINUTES",
    "EHRSYNC_LANDING_RETENTION_DAYS",
    "EHRSYNC_RUN_RETENTION_DAYS",
    "EHRSYNC_RUN_RETENTION_CRON",
    "EHRSYNC_ANALYST_GENERATIONS",
    "EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS",
    "EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS",
)


class AppSettings(BaseSettings):
    """The locations every ehrsync process shares (fields are the variable names; a location or an engine variable
    set to an empty or blank value is unset: a location's default, and an engine variable is not handed to the
    engine, so its default).

    The resolved values are the lower-case properties: ``state_dir``, ``database_url``, ``warehouse_url``,
    ``dagster_home``. The auth service's ``Settings`` extends this class, so it resolves them the same way.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)
    # Secrets a blank value leaves unset (``_blank_secret_is_unset``); the auth service's ``Settings`` adds its own.
    BLANK_IS_UNSET: ClassVar[frozenset[str]] = frozenset(
        {"INTEGRATIONS_TOKEN_ENC_KEY", "INTEGRATIONS_TOKEN_ENC_KEYS_OLD", "EHR_JWT_PRIVATE_KEY"}
    )

    EHRSYNC_STATE_DIR: str = ""
    EHRSYNC_HOME: str = ""
    DATABASE_URL: str = ""
    EHRSYNC_DATABASE_URL: str = ""
    WAREHOUSE_URL: str = ""
    DAGSTER_HOME: str = ""
    # The vault's keys: checked where they are used (``store.TokenCipher``, the auth service's ``Settings``); here
    # so the Dagster resources can bind them by name (``EnvVar``) when they are set.
    INTEGRATIONS_TOKEN_ENC_KEY: SecretStr | None = None
    INTEGRATIONS_TOKEN_ENC_KEYS_OLD: SecretStr | None = None
    # The key the vault signs SMART Backend Services assertions with, bound by name like the vault's keys.
    EHR_JWT_PRIVATE_KEY: SecretStr | None = None
    # The service-wide write switch: the auth service requests write scopes and the note write-back sends only
    # when it is on (and the tenant's switches are).
    SMART_ENABLE_WRITE: bool = False

    EHRSYNC_SYNC_WINDOWS: str | None = None
    EHRSYNC_QUARANTINE_MAX_RATIO: str | None = None
    EHRSYNC_SYNC_OVERLAP_SECONDS: str | None = None
    EHRSYNC_SYNC_BATCH_SIZE: str | None = None  # scheduled patient syncs per Dagster run (issue 14)
    EHRSYNC_KEEPALIVE_IDLE_DAYS: str | None = None
    EHRSYNC_FETCH_ALLOWED_HOSTS: str | None = None
    EHRSYNC_MAX_RESOURCE_BYTES: str | None = None
    EHRSYNC_MAX_RESPONSE_BYTES: str | None = None
    EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS: str | None = None
    EHRSYNC_STEP_BUDGET_S: str | None = None
    EHRSYNC_REQUEST_DEADLINE_S: str | None = None
    EHRSYNC_BULK_MAX_FILE_BYTES: str | None = None
    EHRSYNC_BULK_MAX_FILES: str | None = None
    EHRSYNC_MIN_FREE_DISK_BYTES: str | None = None
    EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S: str | None = None
    EHRSYNC_BULK_LOW_SPEED_WINDOW_S: str | None = None
    EHRSYNC_BULK_FILE_DEADLINE_S: str | None = None
    EHRSYNC_BULK_MERGE_GROUP_BYTES: str | None = None
    EHRSYNC_DUCKDB_MEMORY_LIMIT: str | None = None
    EHRSYNC_DUCKDB_THREADS: str | None = None
    EHRSYNC_RETRY_BASE_SECONDS: str | None = None
    EHRSYNC_RETRY_CAP_SECONDS: str | None = None
    EHRSYNC_FRESHNESS_GRACE_MINUTES: str | None = None
    EHRSYNC_LANDING_RETENTION_DAYS: str | None = None
    EHRSYNC_RUN_RETENTION_DAYS: str | None = None
    EHRSYNC_RUN_RETENTION_CRON: str | None = None
    EHRSYNC_ANALYST_GENERATIONS: str | None = None
    EHRSYNC_ANALYST_MIN_INTERVAL_SECONDS: str | None = None
    EHRSYNC_ANALYST_LOCK_TIMEOUT_SECONDS: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, data: Any) -> Any:
        """A secret set to an empty or blank value is left out, as if unset: ``INTEGRATIONS_TOKEN_ENC_KEY=`` in a
        compose file is no key (the auth service then says the variable is required, as when it is unset; before,
        "is empty"), and the Dagster resources do not bind a blank key by name as if one were set."""
        if not isinstance(data, dict):
            return data
        return {name: value for name, value in data.items() if not (name in cls.BLANK_IS_UNSET and _blank(value))}

    @model_validator(mode="after")
    def _check_locations(self) -> AppSettings:
        """The state folder, Dagster home and app database URL in effect, each named by the variable that set it."""
        state_variable = next((n for n in ("EHRSYNC_STATE_DIR", "EHRSYNC_HOME") if getattr(self, n).strip()), None)
        if state_variable is not None and (problem := state_dir_problem(getattr(self, state_variable).strip())):
            raise ValueError(f"{state_variable}: {problem}")
        if problem := _dagster_home_problem(self.DAGSTER_HOME.strip()):
            raise ValueError(f"DAGSTER_HOME: {problem}")  # else the Dagster instance says "File exists: <path>"
        database_variable = self.database_url_variable
        if database_variable is not None and (problem := app_database_url_problem(self.database_url)):
            raise ValueError(f"{database_variable}: {problem}")
        return self

    @property
    def state_dir(self) -> Path:
        """Absolute, so a child process started elsewhere (Dagster's code server) finds the same files."""
        raw = self.EHRSYNC_STATE_DIR.strip() or self.EHRSYNC_HOME.strip() or DEFAULT_STATE_DIR
        return Path(raw).expanduser().resolve()

    @property
    def database_url_variable(self) -> str | None:
        """Which variable named the app database (``DATABASE_URL`` first), or ``None`` for the state default."""
        for name in ("DATABASE_URL", "EHRSYNC_DATABASE_URL"):
            if getattr(self, name).strip():
                return name
        return None

    @property
    def database_url(self) -> str:
        name = self.database_url_variable
        return str(getattr(self, name)).strip() if name else f"sqlite:///{self.state_dir / 'app.db'}"

    @property
    def warehouse_url(self) -> str:
        return self.WAREHOUSE_URL.strip() or str(self.state_dir / "warehouse.duckdb")

    @property
    def dagster_home(self) -> Path:
        """``DAGSTER_HOME`` when the operator set it, else ``<state>/dagster_home``."""
        raw = self.DAGSTER_HOME.strip()
        return Path(raw).expanduser().resolve() if raw else self.state_dir / "dagster_home"

    @property
    def vault_key_variables(self) -> tuple[str, ...]:
        """The vault's secrets that are set: its keys and its signing key (their values stay secret)."""
        names = ("INTEGRATIONS_TOKEN_ENC_KEY", "INTEGRATIONS_TOKEN_ENC_KEYS_OLD", "EHR_JWT_PRIVATE_KEY")
        return tuple(name for name in names if getattr(self, name) is not None)

    def engine_values(self) -> dict[str, str]:
        """The engine's variables the operator set, as text (``engine.settings`` parses and checks them); one set
        to a blank value is left out, unset, as a run's own readers of the process environment read it."""
        return {
            name: value for name in ENGINE_VARIABLES if (value := getattr(self, name)) is not None and value.strip()
        }


def _blank(value: Any) -> bool:
    """Text (or a ``SecretStr`` an override passed) that is empty or only whitespace."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return isinstance(text, str) and not text.strip()


def _dagster_home_problem(value: str) -> str | None:
    """A file where the Dagster home should be. A folder this process may not look at is left to Dagster: the auth
    service never opens it, and may run as a user the Dagster processes' home is closed to."""
    if not value:
        return None
    try:
        return state_dir_problem(value)
    except OSError:  # permission denied, a name too long: not known to be a file
        return None


class _MappingSettings(AppSettings):
    """``AppSettings`` read from the given values only: a mapping names the whole configuration, so a variable it
    leaves out stays unset even when this process's environment sets it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load_app_settings(env: Mapping[str, str] | None = None) -> AppSettings:
    """Read the process environment (or only ``env``, for tests and for callers that assembled one) once."""
    try:
        if env is None:
            return AppSettings()
        known = {name: env[name] for name in AppSettings.model_fields if name in env}
        return _MappingSettings.model_validate(known)
    except ValidationError as exc:  # a switch that is not a boolean (SMART_ENABLE_WRITE), or a non-string value
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"invalid ehrsync settings: {where + ': ' if where else ''}{message}") from None
