"""Resolve "tenant X, provider Y" into everything a SMART flow needs: base URL, client, scopes.

Two sources, in the seed format: a ``provider_configs`` row (vendor plugin from ``connectors.providers``) or
the tenant's single ``smartFhir`` server, reachable as provider id ``smart``. Write scopes are requested only
when ``SMART_ENABLE_WRITE``, the tenant's ``enableWrite`` and the feature flag are all on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from auth_service.core.config import Settings
from auth_service.services.errors import NotFoundError, ProviderUnusableError
from auth_service.services.providers_port import (
    check_provider_client_auth,
    plugin,
    plugin_default_scopes,
    plugin_display_name,
    plugin_fhir_base,
    plugin_write_supported,
)
from auth_service.services.write_scopes import least_privilege_scopes, log_narrowed
from auth_service.tenants.settings import PracticeSettings, TenantSettingInvalidError, write_scopes_allowed
from connectors.errors import ConfigurationError
from connectors.smart import ClientAuth, load_signing_key
from store.crypto import TokenCipher
from store.models import ProviderConfig, Tenant
from store.provider_configs import client_auth_from_config, decrypt_config

__all__ = [
    "SMART_PROVIDER_ID",
    "ClientProfile",
    "check_client_auth_config",
    "check_provider_enabled",
    "configured_auth_method",
    "enabled_provider_ids",
    "resolve_profile",
]

SMART_PROVIDER_ID = "smart"
logger = logging.getLogger(__name__)
_WRITE_SCOPES = {"note": "patient/DocumentReference.c", "patient": "user/Patient.c"}


@dataclass(frozen=True)
class ClientProfile:
    """One (tenant, provider) pair ready for a flow; ``config`` holds decrypted secrets: memory only."""

    tenant_id: str
    provider_id: str
    display_name: str
    fhir_base: str
    issuer: str
    client_id: str
    scopes: str
    write_allowed: bool
    note_write_allowed: bool
    vendor_allows_notes: bool
    config: Mapping[str, Any] = field(repr=False)
    #: A tenant write switch the write scopes hang on, stored as neither true nor false: ``scopes`` ask no write
    #: access, and a flow that asks for scopes refuses to start (``check_settings``); refreshes go on as before.
    setting_problem: str | None = None

    def check_settings(self) -> None:
        """TenantSettingInvalidError (409 ``configuration_error``) naming the setting the scopes hang on, if any."""
        if self.setting_problem is not None:
            raise TenantSettingInvalidError(self.setting_problem)

    @property
    def auth_method(self) -> str:
        return configured_auth_method(self.config)

    def client_auth(self, settings: Settings, grant: str | None = None, *, client_id: str | None = None) -> ClientAuth:
        """The ClientAuth for this client; the signing key and kid come from settings unless configured.
        ``client_id``: authenticate as that id instead of the config's (a connection's own: the id its grant was
        issued to, which its refresh token is bound to, RFC 6749 §6, after the operator rotated the config's).

        AuthMethodNotAllowedError when the vendor's plugin does not declare the method and alg for ``grant``
        (``client_credentials`` or ``authorization_code``; ``None``: for any grant)."""
        config = dict(self.config)
        environ: dict[str, str] = {}
        if settings.EHR_JWT_PRIVATE_KEY is not None:
            environ["EHR_JWT_PRIVATE_KEY"] = settings.signing_key_pem()
        method = self.auth_method
        config["auth_method"] = method
        if method == "private_key_jwt" and not _first(config, "private_key_pem", "privateKey", "private_key"):
            if not _first(config, "key_id", "kid", "keyId"):
                config["key_id"] = settings.EHR_JWT_KEY_ID
            config.setdefault("signing_alg", settings.signing_alg())
        auth = client_auth_from_config(config, client_id=client_id or self.client_id, environ=environ)
        check_provider_client_auth(self.provider_id, auth, grant)
        return auth


def configured_auth_method(config: Mapping[str, Any]) -> str:
    """The token endpoint auth method a provider config asks for: explicit, else inferred from what it holds
    (a private key or kid: ``private_key_jwt``; a secret: ``client_secret_basic``; nothing: ``none``)."""
    method = config.get("auth_method") or config.get("authMethod")
    if method:
        return "none" if method == "public" else str(method)
    if _first(config, "private_key_pem", "privateKey", "private_key", "key_id", "kid", "keyId"):
        return "private_key_jwt"
    if _first(config, "client_secret", "clientSecret"):
        return "client_secret_basic"
    return "none"


def check_client_auth_config(provider_id: str, config: Mapping[str, Any], settings: Settings) -> None:
    """AuthMethodNotAllowedError when the method a config asks for, and for ``private_key_jwt`` the alg it would
    sign with (its ``signing_alg``, else the one its own key is for, else the service key's), is one the vendor's
    plugin declares for no grant: eCW is RS384-only, PointClickCare takes no JWT (vendors.md §4, §8)."""
    vendor = plugin(provider_id)
    if vendor is None:
        return
    method = configured_auth_method(config)
    alg: str | None = None
    if method == "private_key_jwt":
        explicit = _first(config, "signing_alg", "signingAlg", "alg")
        own_key = _first(config, "private_key_pem", "privateKey", "private_key")
        alg = str(explicit) if explicit else _key_alg(str(own_key)) if own_key else settings.signing_alg()
    vendor.check_client_auth(method, alg)


def _key_alg(private_key_pem: str) -> str:
    """The alg a config's own key signs with when the config names none (as ``client_auth_from_config``); an
    unreadable key is refused where it is used, with the error naming it."""
    try:
        key = load_signing_key(private_key_pem)
    except ConfigurationError:
        return "RS384"
    return "ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384"


def _first(config: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if config.get(name):
            return config[name]
    return None


def enabled_provider_ids(session: Session, tenant: Tenant, practice: PracticeSettings) -> list[str]:
    """Providers a patient may pick: enabled rows listed in ``enabledProviders``, plus ``smart`` when on (and its
    provider-config row, if any, not disabled)."""
    rows = session.scalars(select(ProviderConfig).where(ProviderConfig.tenant_id == tenant.id)).all()
    listed = set(practice.ehr_integrations.enabled_providers)
    ids = [r.provider_id for r in rows if r.enabled and r.provider_id in listed]
    smart, smart_off = practice.smart_fhir, any(r.provider_id == SMART_PROVIDER_ID and not r.enabled for r in rows)
    if smart.fhir_base_url and not smart_off and SMART_PROVIDER_ID not in ids and _smart_on(tenant.id, practice):
        ids.append(SMART_PROVIDER_ID)
    return sorted(ids)


def _smart_on(tenant_id: str, practice: PracticeSettings) -> bool:
    """``smartFhir.enabled`` for a list of providers: one stored as neither true nor false leaves ``smart`` off the
    list (never granted on a guess), logged naming the setting; choosing it is refused naming it."""
    problem = practice.setting_problem("enabled")
    if problem is not None:
        logger.warning("provider smart of tenant %s left out: %s", tenant_id, problem)
        return False
    return practice.said_true("enabled")


def _write_allowed(settings: Settings, practice: PracticeSettings, feature: str, problems: list[str]) -> bool:
    """``write_scopes_allowed``; a switch it hangs on stored as neither true nor false: no (``problems`` names it)."""
    try:
        return write_scopes_allowed(settings.SMART_ENABLE_WRITE, practice, feature)
    except TenantSettingInvalidError as exc:
        problems.append(exc.message)
        return False


def _scopes(
    settings: Settings,
    practice: PracticeSettings,
    tenant_id: str,
    provider_id: str,
    config: Mapping[str, Any],
    problems: list[str],
) -> tuple[str, bool, bool]:
    note = _write_allowed(settings, practice, "enableNoteCreate", problems)
    patient = _write_allowed(settings, practice, "enablePatientCreate", problems)
    configured = config.get("scopes")
    if isinstance(configured, list):
        configured = " ".join(str(s) for s in configured)
    base = str(configured) if configured else None
    if base is None:
        base = plugin_default_scopes(provider_id, config, note=note, patient=patient)
    if base is None:
        wanted = settings.SMART_DEFAULT_SCOPES.split()
        if note:
            wanted.append(_WRITE_SCOPES["note"])
        if patient:
            wanted.append(_WRITE_SCOPES["patient"])
        base = " ".join(wanted)
    # A configured or plugin list must not sneak write scopes past the flags, feature by feature (least privilege).
    base, changed = least_privilege_scopes(base, note=note, patient=patient)
    log_narrowed(tenant_id, provider_id, changed, note=note, patient=patient)
    return base, note or patient, note


def _fhir_base(provider_id: str, config: Mapping[str, Any]) -> str | None:
    """The tenant's own SMART server: its configured base. A vendor: the base its plugin builds from the config
    (the admin enters the host; the tenant id or practice code is part of the base), never the raw host."""
    vendor = plugin(provider_id)
    raw = _first(config, "fhir_base_url", "fhirBaseUrl", "fhir_base")
    if vendor is None:
        return str(raw) if raw else None
    try:
        built = plugin_fhir_base(vendor, config)
        # the base as configured, when it is the built one: its spelling (a trailing slash) is the aud and the
        # issuer the allow-list was written for (SAL-10: byte for byte)
        return str(raw) if raw and str(raw).rstrip("/") == built.rstrip("/") else built
    except ConfigurationError as exc:
        raise ProviderUnusableError(
            f"provider {provider_id!r}: cannot build the FHIR base URL from its config ({exc.message})",
            code="configuration_error",
        ) from None


def _check_enabled(practice: PracticeSettings, row: ProviderConfig | None, provider_id: str) -> None:
    """``provider_disabled`` (ProviderUnusableError) unless the tenant's provider may serve a flow: ``smart`` while
    the tenant's ``smartFhir`` is enabled and a ``smart`` provider-config row, if any, is not disabled; another
    provider while its row is enabled and listed in ``enabledProviders`` (NotFoundError without a row)."""
    if provider_id == SMART_PROVIDER_ID:
        if not practice.switches_on("enabled"):
            raise ProviderUnusableError("the tenant's SMART on FHIR server is not enabled")
        if row is not None and not row.enabled:
            raise ProviderUnusableError(f"provider {provider_id!r} is disabled for this tenant (its provider config)")
        return
    if row is None:
        raise NotFoundError(f"provider {provider_id!r} is not configured for this tenant")
    if not row.enabled or provider_id not in practice.ehr_integrations.enabled_providers:
        raise ProviderUnusableError(f"provider {provider_id!r} is disabled for this tenant")


def check_provider_enabled(session: Session, tenant_id: str, provider_id: str) -> None:
    """Raise what ``resolve_profile`` would for a disabled or unconfigured provider, before anything is sent: an
    admin's retry of a disabled provider's connections is refused (409 ``provider_disabled``) as a sign-in is."""
    from auth_service.services.tenants import get_practice_settings

    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"unknown tenant {tenant_id!r}")
    row = session.scalar(
        select(ProviderConfig).where(ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id)
    )
    _check_enabled(get_practice_settings(tenant), row, provider_id)


def resolve_profile(
    session: Session, cipher: TokenCipher, settings: Settings, tenant_id: str, provider_id: str
) -> ClientProfile:
    """Everything a flow needs, or a ``ServiceError`` saying what is missing (not found / disabled / incomplete);
    AuthMethodNotAllowedError when the config's client auth is one the vendor's plugin does not declare."""
    from auth_service.services.tenants import get_practice_settings

    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"unknown tenant {tenant_id!r}")
    practice = get_practice_settings(tenant)
    row = session.scalar(
        select(ProviderConfig).where(ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id)
    )
    _check_enabled(practice, row, provider_id)
    config: dict[str, Any] = decrypt_config(cipher, row) if row is not None else {}
    if provider_id == SMART_PROVIDER_ID:
        smart = practice.smart_fhir
        config = {"fhir_base_url": smart.fhir_base_url, "client_id": smart.client_id, "issuer": smart.issuer, **config}
    fhir_base = _fhir_base(provider_id, config)
    client_id = _first(config, "client_id", "clientId")
    if not fhir_base or not client_id:
        raise ProviderUnusableError(
            f"provider {provider_id!r} needs a FHIR base URL and a client id", code="configuration_error"
        )
    check_client_auth_config(provider_id, config, settings)
    problems: list[str] = []
    scopes, write_allowed, note_allowed = _scopes(settings, practice, tenant_id, provider_id, config, problems)
    return ClientProfile(
        tenant_id=tenant_id,
        provider_id=provider_id,
        display_name=plugin_display_name(provider_id),
        fhir_base=str(fhir_base),
        issuer=str(_first(config, "issuer") or fhir_base),
        client_id=str(client_id),
        scopes=scopes,
        write_allowed=write_allowed,
        note_write_allowed=note_allowed,
        vendor_allows_notes=plugin_write_supported(provider_id),
        config=config,
        setting_problem=problems[0] if problems else None,
    )
