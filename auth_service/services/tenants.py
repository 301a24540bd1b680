"""Tenants and their API keys; ``bootstrap_tenant`` is the CLI-callable way to create the first admin key."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import flag_modified

from auth_service.tenants.settings import PracticeSettings, TenantSeed, load_tenant_seed, stored_practice_settings
from connectors.tenant_switches import stored_problems
from store.audit import record_audit
from store.crypto import TokenCipher
from store.models import ApiKey, Tenant
from store.provider_configs import save_provider_config
from store.tenant_settings import NOT_JSON, stored_settings

__all__ = [
    "BootstrapResult",
    "bootstrap_existing",
    "bootstrap_tenant",
    "create_api_key",
    "get_practice_settings",
    "hash_api_key",
    "resolve_api_key",
    "seed_tenants",
    "upsert_tenant",
]

_KEY_PREFIX = "ehs_"


@dataclass(frozen=True)
class BootstrapResult:
    tenant_id: str
    api_key: str  # shown once; only its hash is stored
    #: An existing tenant's stored switches that are neither true nor false (kept as stored; shown as warnings).
    setting_problems: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"BootstrapResult(tenant_id={self.tenant_id!r})"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def upsert_tenant(session: Session, seed: TenantSeed, cipher: TokenCipher, actor: str = "seed") -> Tenant:
    """Create or replace a tenant from a seed; ``providerConfigs`` go to sealed provider-config rows.

    Secrets in provider configs are encrypted like tokens, so they never sit in the tenant's settings JSON.
    """
    # the stored settings are replaced unread: a hand-edited row that is not JSON is what a re-seed fixes
    tenant = session.get(Tenant, seed.id, options=[defer(Tenant.settings)])
    practice = seed.practice_settings.model_dump(by_alias=True, mode="json")
    provider_configs = practice.get("ehrIntegrations", {}).pop("providerConfigs", {}) or {}
    settings = {"practice_settings": practice}
    if tenant is None:
        tenant = Tenant(id=seed.id, name=seed.name, settings=settings)
        session.add(tenant)
        action = "tenant.create"
    else:
        tenant.name = seed.name
        tenant.settings = settings
        flag_modified(tenant, "settings")  # an equal value is written too: ``1 == True``, but only ``true`` is a switch
        action = "tenant.update"
    session.flush()
    for provider_id, config in provider_configs.items():
        save_provider_config(session, cipher, tenant_id=seed.id, provider_id=str(provider_id), config=config)
    record_audit(
        session,
        tenant_id=seed.id,
        actor=actor,
        action=action,
        outcome="success",
        detail={"providers": sorted(provider_configs)},
    )
    return tenant


def get_practice_settings(tenant: Tenant) -> PracticeSettings:
    """The tenant's settings as stored (SQL or JSON null: none); read its switches with ``switches_on``. Settings
    that are no object (``[]``, ``false``) are a ``TenantSettingInvalidError`` naming them
    (``stored_practice_settings``), never read as ``{}``: every switch off."""
    return stored_practice_settings({} if tenant.settings is None else tenant.settings)


def create_api_key(session: Session, tenant_id: str, name: str = "admin", actor: str = "bootstrap") -> str:
    """A new random key for ``tenant_id``; the caller must show it once, we keep only the hash."""
    key = _KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant_id, key_hash=hash_api_key(key), name=name))
    record_audit(
        session, tenant_id=tenant_id, actor=actor, action="api_key.create", outcome="success", detail={"name": name}
    )
    return key


def resolve_api_key(session: Session, key: str) -> str | None:
    """The tenant id of a live key, else ``None``; updates ``last_used_at``."""
    if not key.startswith(_KEY_PREFIX):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None)))
    if row is None:
        return None
    row.last_used_at = datetime.now(UTC)
    return row.tenant_id


def bootstrap_tenant(
    session: Session, seed: TenantSeed, cipher: TokenCipher, key_name: str = "admin"
) -> BootstrapResult:
    """Create/update the tenant and mint an admin API key for it (the first key has to come from somewhere)."""
    upsert_tenant(session, seed, cipher, actor="bootstrap")
    return BootstrapResult(seed.id, create_api_key(session, seed.id, key_name))


def bootstrap_existing(session: Session, tenant: Tenant, name: str, key_name: str = "admin") -> BootstrapResult:
    """A new admin API key for a tenant that exists, renamed to ``name``; its settings are kept byte for byte. They
    used to be read back loosely and rewritten: a stored ``"yes"`` became ``true`` (a switch turned on that the
    tenant never clearly turned on) and a ``"maybe"`` stopped the command with a traceback. A switch neither true
    nor false is reported instead (``setting_problems``): the seed (``ehrsync auth seed``) is the way to fix it."""
    if tenant.name != name:
        tenant.name = name
        record_audit(
            session, tenant_id=tenant.id, actor="bootstrap", action="tenant.update", outcome="success", detail={}
        )
    key = create_api_key(session, tenant.id, key_name)
    return BootstrapResult(tenant.id, key, tuple(_stored_problems(session, tenant.id)))


def _stored_problems(session: Session, tenant_id: str) -> list[str]:
    """``stored_problems`` of the tenant's settings read as text: a row that is not JSON (a hand edit of an SQLite
    database) is one problem named, never a ``JSONDecodeError`` that stops the command before its key is minted."""
    stored = stored_settings(session, [tenant_id]).get(tenant_id, {})
    if stored is NOT_JSON:
        return ["settings are not JSON (a hand-edited row); the service cannot read its switches"]
    return stored_problems(stored)


def seed_tenants(session: Session, cipher: TokenCipher, path: str | Path) -> list[str]:
    """Load a tenant seed JSON file into the database (CLI: ``ehrsync auth seed FILE``)."""
    return [upsert_tenant(session, seed, cipher).id for seed in load_tenant_seed(path)]
