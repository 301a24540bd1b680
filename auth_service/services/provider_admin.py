"""Admin operations on a tenant's provider configs; secrets are sealed and never echoed back."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from auth_service.core.config import Settings
from auth_service.services.context import ServiceContext
from auth_service.services.errors import ConfigValidationError, NotFoundError
from auth_service.services.profiles import SMART_PROVIDER_ID, check_client_auth_config
from auth_service.services.providers_port import field_hints, plugin, plugin_display_name, validate_config
from auth_service.services.tenants import get_practice_settings
from connectors.errors import AuthMethodNotAllowedError
from store.audit import record_audit
from store.models import Connection, ConnectionStatus, ProviderConfig, Tenant
from store.provider_configs import SECRET_FIELDS, save_provider_config

__all__ = [
    "config_problems",
    "delete_provider",
    "describe_provider",
    "health",
    "known_provider",
    "list_providers",
    "set_enabled",
    "upsert_provider",
]

_PROVIDER_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
#: The tenant's own SMART server (``practice_settings.smartFhir``), listed without a provider-config row.
_SMART = SMART_PROVIDER_ID


def _row(session: Session, tenant_id: str, provider_id: str) -> ProviderConfig:
    row = session.scalar(
        select(ProviderConfig).where(ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id)
    )
    if row is None:
        raise _not_configured(provider_id)
    return row


def _not_configured(provider_id: str) -> NotFoundError:
    if provider_id == _SMART:
        return NotFoundError(
            "provider 'smart' has no provider config: it is the tenant's smartFhir server, "
            "set in the tenant's practice settings"
        )
    return NotFoundError(f"provider {provider_id!r} is not configured for this tenant")


def _audit(session: Session, action: str, actor: str, row: ProviderConfig, **detail: Any) -> None:
    """A change to a provider config, audited in the transaction that makes it."""
    detail = {"provider": row.provider_id, **detail}
    record_audit(session, action=action, outcome="success", tenant_id=row.tenant_id, actor=actor, detail=detail)


def _public_config(config: dict[str, Any]) -> dict[str, Any]:
    """Secret members become ``{"set": true}``: write-only from the API's point of view."""
    return {
        k: ({"set": True} if k in SECRET_FIELDS or (isinstance(v, dict) and "$enc" in v) else v)
        for k, v in config.items()
    }


def _enabled_list(tenant: Tenant) -> list[str]:
    """``enabledProviders`` as sign-in reads it; settings it cannot read (no object: ``[]``, ``[1]``) are a
    ``TenantSettingInvalidError`` naming them, never an empty list (every provider shown disabled, then rewritten)."""
    return list(get_practice_settings(tenant).ehr_integrations.enabled_providers)


def _set_enabled_list(tenant: Tenant, ids: list[str]) -> None:
    settings = dict(tenant.settings or {})
    practice = dict(settings.get("practice_settings") or {})
    integrations = dict(practice.get("ehrIntegrations") or {})
    integrations["enabledProviders"] = sorted(set(ids))
    practice["ehrIntegrations"] = integrations
    settings["practice_settings"] = practice
    tenant.settings = settings


def describe_provider(row: ProviderConfig, tenant: Tenant) -> dict[str, Any]:
    return {
        "provider": row.provider_id,
        "display_name": plugin_display_name(row.provider_id),
        "enabled": _serves_sign_in(row, tenant),
        "config": _public_config(row.config),
        "field_hints": field_hints(row.provider_id),
        "updated_at": row.updated_at.isoformat(),
        "source": "provider_config",
    }


def _serves_sign_in(row: ProviderConfig, tenant: Tenant) -> bool:
    """``enabled`` as sign-in decides it (``profiles._check_enabled``): a ``smart`` row serves while the tenant's
    ``smartFhir`` is enabled and the row is not disabled, listed in ``enabledProviders`` or not (it was shown
    disabled while it signed patients in); any other row while it is enabled and listed."""
    if row.provider_id == _SMART:
        return bool(row.enabled) and get_practice_settings(tenant).said_true("enabled")
    return bool(row.enabled) and row.provider_id in _enabled_list(tenant)


def _describe_tenant_smart(tenant: Tenant) -> dict[str, Any] | None:
    """``smart`` as the tenant's smartFhir settings define it (read-only here), or ``None`` when they do not."""
    practice = get_practice_settings(tenant)
    smart, enabled, problem = practice.smart_fhir, practice.said_true("enabled"), practice.setting_problem("enabled")
    if not (enabled or problem or smart.fhir_base_url):
        return None
    config = {"fhirBaseUrl": smart.fhir_base_url, "issuer": smart.issuer, "clientId": smart.client_id}
    return {
        "provider": _SMART,
        "display_name": plugin_display_name(_SMART),
        "enabled": enabled and bool(smart.fhir_base_url),
        **({"setting_problem": problem} if problem else {}),
        "config": {k: v for k, v in config.items() if v is not None},
        "field_hints": {},
        "updated_at": tenant.updated_at.isoformat(),
        "source": "tenant_settings",
    }


def _described(session: Session, tenant: Tenant) -> list[dict[str, Any]]:
    """Every provider-config row, then ``smart`` from the tenant's smartFhir settings unless a row overrides it."""
    rows = session.scalars(select(ProviderConfig).where(ProviderConfig.tenant_id == tenant.id))
    out = [describe_provider(r, tenant) for r in rows]
    smart = _describe_tenant_smart(tenant)
    if smart is not None and all(p["provider"] != _SMART for p in out):
        out.append(smart)
    return out


def list_providers(ctx: ServiceContext, tenant_id: str) -> list[dict[str, Any]]:
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        return _described(session, tenant)


def get_provider_config(ctx: ServiceContext, tenant_id: str, provider_id: str) -> dict[str, Any]:
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        for described in _described(session, tenant):
            if described["provider"] == provider_id:
                return described
    raise _not_configured(provider_id)


def known_provider(provider_id: str) -> bool:
    """A vendor plugin's id, or the tenant's own SMART server."""
    return plugin(provider_id) is not None or provider_id == _SMART


def config_problems(provider_id: str, config: dict[str, Any], settings: Settings) -> list[dict[str, str]]:
    """The field errors of a known provider's config, as both the admin API and ``ehrsync auth seed`` check it: the
    vendor's schema and bounds, then (on a config that meets them) a client auth the vendor accepts, so a bad one
    is refused when stored, not at the first launch or sync. Empty when the config is fine."""
    errors = _sealed_members(config) or validate_config(provider_id, config)
    if errors:
        return errors
    try:
        check_client_auth_config(provider_id, config, settings)
    except AuthMethodNotAllowedError as exc:
        return [{"field": "config", "message": exc.message}]
    return []


def _sealed_members(config: dict[str, Any]) -> list[dict[str, str]]:
    """Members shaped like a sealed secret (``{"$enc": ...}``): the store's own format, opened wherever the config is
    read (every tenant's, by the shared launch URL and the key rotation), never input. Stored, one that does not open
    stopped the key rotation of every tenant's secrets; a secret is given as a plain string and sealed here."""
    message = 'a value shaped like a sealed secret ({"$enc": ...}) is never input: give a secret as a plain string'
    return [{"field": k, "message": message} for k, v in config.items() if isinstance(v, dict) and "$enc" in v]


def upsert_provider(
    ctx: ServiceContext, tenant_id: str, provider_id: str, config: dict[str, Any], actor: str
) -> dict[str, Any]:
    """Validate against the plugin's schema and its declared client auth methods (422 with field errors), seal
    secrets, store, audit."""
    if not provider_id or not set(provider_id) <= _PROVIDER_ID_CHARS or len(provider_id) > 64:
        raise ConfigValidationError("provider id must be 1-64 of [a-z0-9-_]", fields=[])
    if not known_provider(provider_id):
        raise NotFoundError(f"unknown provider {provider_id!r}")
    errors = config_problems(provider_id, config, ctx.settings)
    if errors:
        raise ConfigValidationError(f"provider config for {provider_id!r} is invalid", fields=errors)
    # Read-modify-write of the tenant's enabledProviders: lock first (SQLite write lock, PostgreSQL row lock).
    with ctx.db.locked_session() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        assert tenant is not None
        existed = session.scalar(
            select(ProviderConfig.id).where(
                ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id
            )
        )
        row = save_provider_config(session, ctx.cipher, tenant_id=tenant_id, provider_id=provider_id, config=config)
        _audit(session, "provider.update" if existed else "provider.create", actor, row, fields=sorted(config))
        return describe_provider(row, tenant)


def delete_provider(ctx: ServiceContext, tenant_id: str, provider_id: str, actor: str) -> None:
    # Read-modify-write of the tenant's enabledProviders: lock first (SQLite write lock, PostgreSQL row lock).
    with ctx.db.locked_session() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        assert tenant is not None
        row = _row(session, tenant_id, provider_id)
        session.delete(row)
        _set_enabled_list(tenant, [p for p in _enabled_list(tenant) if p != provider_id])
        _audit(session, "provider.delete", actor, row)


def set_enabled(ctx: ServiceContext, tenant_id: str, provider_id: str, enabled: bool, actor: str) -> dict[str, Any]:
    """Flip the row and the tenant's ``enabledProviders`` together so both sources agree."""
    # Read-modify-write of the tenant's enabledProviders: lock first (SQLite write lock, PostgreSQL row lock).
    with ctx.db.locked_session() as session:
        tenant = session.get(Tenant, tenant_id, with_for_update=True)
        assert tenant is not None
        row = _row(session, tenant_id, provider_id)
        row.enabled = enabled
        ids = [p for p in _enabled_list(tenant) if p != provider_id]
        _set_enabled_list(tenant, [*ids, provider_id] if enabled else ids)
        _audit(session, "provider.enable" if enabled else "provider.disable", actor, row)
        session.flush()
        return describe_provider(row, tenant)


#: Statuses a person must act on: any of them makes the tenant's health ``degraded``.
_NEEDS_ACTION = (ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.CLIENT_REJECTED, ConnectionStatus.TOKEN_UNDECRYPTABLE)


def health(ctx: ServiceContext, tenant_id: str) -> dict[str, Any]:
    """Per provider (the providers listing, then any other provider a connection still names): enabled flag and
    connection counts by status; a needs_reauth, client_rejected or token_undecryptable connection of any
    provider makes the tenant ``degraded``."""
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        listed = {p["provider"]: bool(p["enabled"]) for p in _described(session, tenant)}
        counts: dict[str, Counter[str]] = {}
        for conn in session.scalars(select(Connection).where(Connection.tenant_id == tenant_id)):
            counts.setdefault(conn.provider_id, Counter())[conn.status] += 1
    ids = [*listed, *sorted(set(counts) - set(listed))]
    providers: list[dict[str, Any]] = [
        {"provider": p, "enabled": listed.get(p, False), "connections": dict(counts.get(p, Counter()))} for p in ids
    ]
    degraded = any(c[status] for c in counts.values() for status in _NEEDS_ACTION)
    return {"tenant": tenant_id, "status": "degraded" if degraded else "ok", "providers": providers}
