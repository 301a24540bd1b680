"""Service settings, validated at start so a bad key stops the service with a message naming the variable.

``Settings`` extends ``settings.AppSettings``: the app database (``database_url``) is resolved exactly as the CLI
and the Dagster code location resolve it (``DATABASE_URL``, else ``EHRSYNC_DATABASE_URL``, else
``sqlite:///<EHRSYNC_STATE_DIR>/app.db``), so ``ehrsync db migrate`` migrates the database the service uses.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from auth_service.core.keys import SigningKey, load_private_key, parse_previous_keys
from connectors.budgets import RESPONSE_BYTES_ENV, RESPONSE_BYTES_WHAT, env_number, env_whole_number
from connectors.errors import ConfigurationError
from connectors.http import url_problem
from connectors.transport import BodyBounds
from engine.errors import PipelineConfigurationError
from engine.warehouse_settings import check_warehouse_url
from settings import VAULT_KEY_HINT, AppSettings
from store.crypto import ENV_ACTIVE_KEY, decode_key, is_placeholder

__all__ = ["Settings", "load_settings"]

_DEFAULT_SCOPES = "openid fhirUser launch/patient offline_access patient/*.rs"


def _it(problem: str | None) -> str:
    """``: it <problem>`` after a URL rule, naming what :func:`connectors.http.url_problem` found."""
    return f": it {problem}" if problem else ""


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class Settings(AppSettings):
    """Environment variables of the auth service (see docs/AUTH_SERVICE.md), plus the shared locations."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)
    BLANK_IS_UNSET: ClassVar[frozenset[str]] = AppSettings.BLANK_IS_UNSET | {
        "EHR_JWT_PREVIOUS_PUBLIC_KEYS",
        "EHR_JWT_KEY_ID",  # blank: unset, so a private key without it is "EHR_JWT_KEY_ID is required"
    }

    INTEGRATIONS_TOKEN_ENC_KEY: SecretStr  # blank: unset, "Field required" (AppSettings._blank_secret_is_unset)
    APP_BASE_URL: str = "http://127.0.0.1:8000"
    SMART_DEFAULT_SCOPES: str = _DEFAULT_SCOPES
    SMART_ENABLE_WRITE: bool = False
    SMART_ISSUER_ALLOWLIST: Annotated[list[str], NoDecode] = Field(default_factory=list)
    LOG_REDACTION_ENABLED: bool = True
    INTEGRATIONS_TOKEN_ENC_KEYS_OLD: SecretStr | None = None
    EHR_JWT_PRIVATE_KEY: SecretStr | None = None
    EHR_JWT_KEY_ID: str | None = None
    EHR_JWT_PREVIOUS_PUBLIC_KEYS: SecretStr | None = None
    CONNECT_LINK_TTL_SECONDS: int = Field(default=900, ge=60, le=86400)
    OAUTH_STATE_TTL_SECONDS: int = Field(default=600, ge=30, le=3600)
    DISCOVERY_CACHE_TTL_SECONDS: int = Field(default=3600, ge=0)
    SESSION_COOKIE_SECURE: bool | None = None
    DAGSTER_GRAPHQL_URL: str = "http://127.0.0.1:3000/graphql"
    # /docs and /redoc: their scripts come from a CDN into this origin, so local development only (api_docs.py).
    API_DOCS_ENABLED: bool = False
    # How long GET /api/ehr/resources waits for a busy warehouse (a sync writing) before answering 503.
    WAREHOUSE_READ_WAIT_SECONDS: float = Field(default=2.0, ge=0.1, le=30.0, allow_inf_nan=False)
    # How long a call a person waits on (discovery, code exchange, backend mint) waits for a vendor's shared call
    # budget (eCW) that background syncs have spent, before answering 503 ehr_unavailable (store.rate_windows).
    EHR_CALL_BUDGET_WAIT_SECONDS: float = Field(default=10.0, ge=0.1, le=60.0, allow_inf_nan=False)

    @field_validator("SMART_ISSUER_ALLOWLIST", mode="before")
    @classmethod
    def _parse_allowlist(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("SMART_ISSUER_ALLOWLIST")
    @classmethod
    def _check_allowlist(cls, value: list[str]) -> list[str]:
        for issuer in value:
            problem = url_problem(issuer)
            if problem is not None:
                raise ValueError(f"entry {issuer!r} is not an absolute http(s) URL{_it(problem)}")
        return value

    @field_validator("INTEGRATIONS_TOKEN_ENC_KEY")
    @classmethod
    def _check_enc_key(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()  # never blank: a blank key is unset (``AppSettings._blank_secret_is_unset``)
        try:  # the one parse the cipher and every HMAC key of the service use (store.crypto.VaultKeys)
            decoded = decode_key(raw, ENV_ACTIVE_KEY)
        except ConfigurationError as exc:
            raise ValueError(str(exc).removeprefix(f"{ENV_ACTIVE_KEY} ")) from None
        if is_placeholder(decoded):  # 32 zero bytes, "AAAA...=": a placeholder copied from an example
            raise ValueError("is a placeholder (every byte the same): generate a random 32-byte key")
        return value

    @field_validator("APP_BASE_URL")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem is not None or "?" in value or "#" in value:
            raise ValueError(f"must be an absolute http(s) URL without query or fragment{_it(problem)}")
        return value.rstrip("/")

    @field_validator("DAGSTER_GRAPHQL_URL")
    @classmethod
    def _check_dagster_url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(f"must be an absolute http(s) URL (the Dagster webserver's /graphql){_it(problem)}")
        return value

    @field_validator("SMART_DEFAULT_SCOPES")
    @classmethod
    def _check_scopes(cls, value: str) -> str:
        if not value.split():
            raise ValueError("must list at least one scope")
        return " ".join(value.split())

    @field_validator("EHR_JWT_KEY_ID")
    @classmethod
    def _strip_key_id(cls, value: str | None) -> str | None:
        """The kid published in the JWKS and signed into each assertion, without the whitespace around it in a
        .env file (``" k1 "`` is ``k1``), as the pipelines read it (``store.provider_configs``)."""
        return value.strip() if value is not None else None

    @field_validator("EHRSYNC_MAX_RESPONSE_BYTES", "EHRSYNC_REQUEST_DEADLINE_S")
    @classmethod
    def _check_request_bound(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Read with the connectors' own rule: every SMART discovery and token call of the service is bounded by
        these, so a bad value stops the start instead of failing each call with ``configuration_error``."""
        if value is None or not value.strip():
            return value
        name = str(info.field_name)
        try:
            if name == RESPONSE_BYTES_ENV:  # a byte count: a whole number, never 0.5 or 1e9 cut off
                env_whole_number(name, 1, minimum=1, what=RESPONSE_BYTES_WHAT, env={name: value})
            else:
                env_number(name, 1.0, env={name: value})
        except ConfigurationError as exc:
            raise ValueError(str(exc).removeprefix(f"{name} ").removeprefix(f"{name}=")) from None
        return value

    @model_validator(mode="after")
    def _check_signing_key(self) -> Settings:
        if self.EHR_JWT_PRIVATE_KEY is not None:
            load_private_key(self.EHR_JWT_PRIVATE_KEY.get_secret_value())
            if not self.EHR_JWT_KEY_ID:
                raise ValueError("EHR_JWT_KEY_ID is required when EHR_JWT_PRIVATE_KEY is set")
        if self.EHR_JWT_PREVIOUS_PUBLIC_KEYS is not None:
            parse_previous_keys(self.EHR_JWT_PREVIOUS_PUBLIC_KEYS.get_secret_value())
        return self

    @model_validator(mode="after")
    def _check_warehouse_url(self) -> Settings:
        """The resources API's warehouse, checked as the pipelines check it before a run: a URL it can never open
        stops the service here, not one 503 "retry later" per request."""
        try:
            check_warehouse_url(self.warehouse_url)
        except PipelineConfigurationError as exc:
            raise ValueError(exc.message) from None
        return self

    def request_bounds(self) -> BodyBounds:
        """The byte limit and deadline of the service's SMART discovery and token calls, from the values read at
        start (the service's HTTP client carries them)."""
        values = {"EHRSYNC_MAX_RESPONSE_BYTES": self.EHRSYNC_MAX_RESPONSE_BYTES}
        values["EHRSYNC_REQUEST_DEADLINE_S"] = self.EHRSYNC_REQUEST_DEADLINE_S
        return BodyBounds.from_env({name: value for name, value in values.items() if value is not None})

    def signing_key(self) -> SigningKey | None:
        """The current private_key_jwt key, or ``None`` when none is configured."""
        if self.EHR_JWT_PRIVATE_KEY is None or not self.EHR_JWT_KEY_ID:
            return None
        return SigningKey(load_private_key(self.EHR_JWT_PRIVATE_KEY.get_secret_value()), self.EHR_JWT_KEY_ID)

    def signing_key_pem(self) -> str:
        key = self.signing_key()
        if key is None:
            raise ConfigurationError("EHR_JWT_PRIVATE_KEY and EHR_JWT_KEY_ID are needed for private_key_jwt")
        return key.pem

    def signing_alg(self) -> str:
        key = self.signing_key()
        return key.alg if key is not None else "RS384"

    def previous_public_keys(self) -> list[dict[str, Any]]:
        if self.EHR_JWT_PREVIOUS_PUBLIC_KEYS is None:
            return []
        return parse_previous_keys(self.EHR_JWT_PREVIOUS_PUBLIC_KEYS.get_secret_value())

    @property
    def redirect_uri(self) -> str:
        """The one exact callback URL registered with every EHR (SAL-41)."""
        return f"{self.APP_BASE_URL}/api/integrations/smart/callback"

    @property
    def cookie_secure(self) -> bool:
        if self.SESSION_COOKIE_SECURE is not None:
            return self.SESSION_COOKIE_SECURE
        return self.APP_BASE_URL.startswith("https://")


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (plus overrides) or raise ``ConfigurationError`` naming each bad variable and why."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            if name == "INTEGRATIONS_TOKEN_ENC_KEY" and err["type"] == "missing":
                message += f": {VAULT_KEY_HINT}"  # as the CLI and the pipelines say it
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigurationError("invalid auth service configuration: " + "; ".join(problems)) from None
