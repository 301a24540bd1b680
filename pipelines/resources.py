"""Dagster resources: small, explicit handles on the app database, landing zone, warehouse and EHR HTTP.

No IO managers: assets write through these and report counts in ``MaterializeResult`` metadata. Resources hold
configuration only (connections open per step and close after: DuckDB allows one writing process at a time);
``pipelines.defs._shared.environment.sync_environment`` builds a step's engine environment from them.
``default_resources`` fills it from the settings read once at load; a URL or key the operator set is bound as
``dagster.EnvVar``, so the UI shows its name, never a password, and no step reads the environment.
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from dagster import ConfigurableResource, EnvVar, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from connectors.errors import ConfigurationError
from connectors.fhir import RetryPolicy
from connectors.transport import BodyBounds, BoundedClient
from engine.batch_size import DEFAULT_BATCH_SIZE
from engine.retry_backoff import DEFAULT_BASE_S, DEFAULT_CAP_S, MAX_S, RETRY_BASE_ENV, RETRY_CAP_ENV
from engine.scheduling import RetryBackoff
from engine.settings import PipelineSettings
from engine.sync_windows import SyncWindow, parse_sync_windows
from pipelines.analyst_resource import AnalystResource
from pipelines.landing_resource import LandingZoneResource, unset_field
from pipelines.warehouse_resource import WarehouseResource
from store import AppDatabase, TokenCipher, TokenVault
from store.database import database_error_text

__all__ = [
    "AppDatabaseResource",
    "EhrHttpResource",
    "LandingZoneResource",
    "RetryPolicyResource",
    "SyncPolicyResource",
    "WarehouseResource",
    "default_resources",
]


class AppDatabaseResource(ConfigurableResource["AppDatabaseResource"]):
    """The app database (connections, tokens, sync state): SQLite file or ``postgresql+psycopg://`` URL."""

    url: str = Field(description="SQLAlchemy URL of the app database (DATABASE_URL).")
    connect_timeout_s: int = Field(
        default=10, gt=0, description="PostgreSQL connect timeout (SQLite waits up to 30 s on a locked file)."
    )
    # Bound as EnvVar by ``default_resources``; None: the vault reads the process environment when it opens.
    token_enc_key: str | None = unset_field("The vault key (INTEGRATIONS_TOKEN_ENC_KEY).")
    token_enc_keys_old: str | None = unset_field(
        "Previous vault keys, kid:base64,... (INTEGRATIONS_TOKEN_ENC_KEYS_OLD)."
    )
    jwt_private_key: str | None = unset_field("Backend Services signing key, PEM text or a path (EHR_JWT_PRIVATE_KEY).")

    def engine_url(self) -> str:
        """The URL with an explicit connect timeout for PostgreSQL (a URL that sets one keeps its own)."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
            return self.url
        return parsed.update_query_dict({"connect_timeout": str(self.connect_timeout_s)}).render_as_string(
            hide_password=False
        )

    @contextmanager
    def open(self) -> Iterator[AppDatabase]:
        """An engine for one step or sensor tick, disposed after (no pooled connections outlive it). A database
        that cannot be reached is a ``ConfigurationError`` naming it (``database_error_text``), before any work."""
        db = AppDatabase.from_url(self.engine_url())
        try:
            try:
                db.engine.connect().close()  # the pool keeps it for the first session
            except (OperationalError, InterfaceError) as exc:
                raise ConfigurationError(database_error_text(exc)) from exc
            yield db
        finally:
            db.dispose()

    def vault(self, db: AppDatabase, http: httpx.Client | None = None) -> TokenVault:
        """The token vault (refreshes through ``http``), opened with the configured key when a run needs tokens."""
        return TokenVault(db, self.cipher(), http=http, environ=self.signing_environ())

    def signing_environ(self) -> Mapping[str, str] | None:
        """Where the vault finds signing keys: the bound ``EHR_JWT_PRIVATE_KEY`` first (a provider's own
        ``private_key_env`` is still looked up in the process); None when not bound: the process environment."""
        if self.jwt_private_key is None:
            return None
        return ChainMap({"EHR_JWT_PRIVATE_KEY": self.jwt_private_key}, os.environ)

    def cipher(self) -> TokenCipher:
        """``TokenCipher`` of the configured keys (a bad or missing key is a ConfigurationError naming it)."""
        if self.token_enc_key is None:
            return TokenCipher.from_env()
        keys = {"INTEGRATIONS_TOKEN_ENC_KEY": self.token_enc_key}
        if self.token_enc_keys_old:
            keys["INTEGRATIONS_TOKEN_ENC_KEYS_OLD"] = self.token_enc_keys_old
        return TokenCipher.from_env(keys)


class EhrHttpResource(ConfigurableResource["EhrHttpResource"]):
    """The HTTP client every EHR request of a run goes through, with explicit timeouts.

    One client per run (its connection pool and TLS context are reused by every step), closed when the
    run's resources are torn down.
    """

    connect_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False, description="TCP/TLS connect timeout.")
    read_timeout_s: float = Field(
        default=60.0, gt=0, allow_inf_nan=False, description="Wait for response bytes (slow EHRs)."
    )
    pool_timeout_s: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="Wait for a free pooled connection."
    )
    fetch_allowed_hosts: str = Field(
        default="",
        description="Comma-separated host or host:port that bulk manifests and attachments may name although not "
        "public https (EHRSYNC_FETCH_ALLOWED_HOSTS), e.g. an on-premises file server.",
    )
    retry_min_s: float = Field(
        default=2.0,
        gt=0,
        allow_inf_nan=False,
        description="Shortest wait before a retry: Retry-After floor and first backoff (BDX-10).",
    )
    retry_cap_s: float = Field(
        default=300.0, gt=0, allow_inf_nan=False, description="Longest backoff between two attempts (BDX-10)."
    )
    rate_limits: bool = Field(default=True, description="Keep to each vendor's call budget; off only for a sandbox.")
    max_response_bytes: int | None = unset_field(
        "Largest JSON body read from the EHR: FHIR, Bulk status, SMART discovery and token answers "
        "(EHRSYNC_MAX_RESPONSE_BYTES).",
        ge=1,
    )
    request_deadline_s: float | None = unset_field(
        "Overall time of one request to the EHR, token calls included (EHRSYNC_REQUEST_DEADLINE_S).", gt=0
    )
    _client: httpx.Client | None = PrivateAttr(default=None)

    def bounds(self) -> BodyBounds | None:
        """The request bounds set here; None leaves the connectors' own default (read from the environment). One
        set alone (a run's config naming only ``max_response_bytes``) is kept, the other read as the connectors read
        it: before, it was ignored. The client carries them too, so the vault's discovery and token calls keep to
        them."""
        if self.max_response_bytes is None and self.request_deadline_s is None:
            return None
        read = BodyBounds.from_env()
        max_bytes = read.max_bytes if self.max_response_bytes is None else self.max_response_bytes
        return BodyBounds(max_bytes, read.deadline_s if self.request_deadline_s is None else self.request_deadline_s)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            retry_after_min_s=self.retry_min_s,
            backoff_start_s=self.retry_min_s,
            backoff_cap_s=max(self.retry_cap_s, self.retry_min_s),
        )

    def client(self) -> httpx.Client:
        if self._client is None or self._client.is_closed:
            timeout = httpx.Timeout(
                self.read_timeout_s, connect=self.connect_timeout_s, pool=self.pool_timeout_s, write=self.read_timeout_s
            )
            self._client = BoundedClient(bounds=self.bounds(), timeout=timeout, follow_redirects=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()


class SyncPolicyResource(ConfigurableResource["SyncPolicyResource"]):
    """Scheduling and data-quality policy: preferred windows per EHR source and the quarantine threshold."""

    sync_windows: str = Field(
        default="", description='JSON {"<provider id>": "HH:MM-HH:MM[ Zone]"} (EHRSYNC_SYNC_WINDOWS).'
    )
    quarantine_max_ratio: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Share of lines read that may be quarantined before the check fails."
    )
    overlap_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Incremental searches start this long before the stored mark (BDX-28).",
    )
    bulk_membership_check: bool = Field(
        default=True, description="Group exports: full records of new members (BDX-15)."
    )
    page_size: int = Field(default=200, ge=1, le=1000, description="Resources per search page (_count).")
    sync_batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        ge=1,
        le=1000,
        description="Scheduled patient syncs of one source per run (EHRSYNC_SYNC_BATCH_SIZE).",
    )
    keepalive_idle_days: int = Field(default=7, ge=1, le=89, description="Keepalive refreshes grants unused this long.")

    def windows(self) -> dict[str, SyncWindow]:
        return parse_sync_windows(self.sync_windows)


def _url(value: str, variable: str | None, settings: PipelineSettings) -> str:
    """``EnvVar(variable)`` when the operator named the URL in this process's environment, else the value."""
    return EnvVar(variable) if variable and settings.from_process else value


def _secret(variable: str, settings: PipelineSettings) -> str | None:
    """``EnvVar(variable)`` when set in this process's environment at load, else None (read when used)."""
    return EnvVar(variable) if settings.from_process and variable in settings.vault_key_variables else None


def default_resources(settings: PipelineSettings) -> dict[str, ConfigurableResource[Any]]:
    """The resource set ``pipelines.definitions`` binds, configured from the settings (read once at load)."""
    limits = settings.limits
    return {
        "app_db": AppDatabaseResource(
            url=_url(settings.database_url, settings.database_url_variable, settings),
            token_enc_key=_secret("INTEGRATIONS_TOKEN_ENC_KEY", settings),
            token_enc_keys_old=_secret("INTEGRATIONS_TOKEN_ENC_KEYS_OLD", settings),
            jwt_private_key=_secret("EHR_JWT_PRIVATE_KEY", settings),
        ),
        "landing": LandingZoneResource(
            root=str(settings.landing_dir),
            attachments_root=str(settings.attachments_dir),
            step_budget_s=limits.step_budget_s,
            bulk_max_file_bytes=limits.bulk_max_file_bytes,
            bulk_max_files=limits.bulk_max_files,
            bulk_merge_group_bytes=limits.bulk_merge_group_bytes,
            min_free_disk_bytes=limits.min_free_disk_bytes,
            bulk_low_speed_bytes_per_s=limits.bulk_low_speed.bytes_per_s if limits.bulk_low_speed else 0.0,
            bulk_low_speed_window_s=limits.bulk_low_speed.window_s if limits.bulk_low_speed else None,
            bulk_file_deadline_s=limits.bulk_file_deadline_s or 0.0,
            max_resource_bytes=limits.max_resource_bytes,
            lock_wait_s=limits.lock_wait_s,
            retention_days=settings.landing_retention_days,
        ),
        "warehouse": WarehouseResource(
            target=_url(settings.warehouse_url, settings.warehouse_url_variable, settings),
            duckdb_memory_limit=limits.duckdb_memory_limit,
            duckdb_threads=limits.duckdb_threads,
        ),
        "ehr_http": EhrHttpResource(
            fetch_allowed_hosts=",".join(settings.fetch_allowed_hosts),
            max_response_bytes=limits.max_response_bytes,
            request_deadline_s=limits.request_deadline_s,
        ),
        "policy": SyncPolicyResource(
            sync_windows=settings.sync_windows_raw,
            quarantine_max_ratio=settings.quarantine_max_ratio,
            overlap_seconds=settings.overlap_seconds,
            sync_batch_size=settings.sync_batch_size,
            keepalive_idle_days=settings.keepalive_idle_days,
        ),
        "retry": RetryPolicyResource.from_backoff(settings.retry_backoff),
        "analyst": AnalystResource.from_settings(settings.analyst),
    }


class RetryPolicyResource(ConfigurableResource["RetryPolicyResource"]):
    """How soon a failed sync is retried: ``min(base * 2**(n - 1), cap)`` after the n-th failure in a row."""

    base_seconds: int = Field(default=DEFAULT_BASE_S, ge=1, le=MAX_S, description=RETRY_BASE_ENV)
    cap_seconds: int = Field(default=DEFAULT_CAP_S, ge=1, le=MAX_S, description=RETRY_CAP_ENV)

    @classmethod
    def from_backoff(cls, backoff: RetryBackoff) -> RetryPolicyResource:
        """The policy the settings parsed (``EHRSYNC_RETRY_BASE_SECONDS`` / ``EHRSYNC_RETRY_CAP_SECONDS``)."""
        return cls(base_seconds=int(backoff.base.total_seconds()), cap_seconds=int(backoff.cap.total_seconds()))

    def backoff(self) -> RetryBackoff:
        return RetryBackoff(
            base=timedelta(seconds=self.base_seconds), cap=timedelta(seconds=max(self.cap_seconds, self.base_seconds))
        )
