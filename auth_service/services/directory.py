"""The connect page's directory: the tenant's brands (SMART brands bundles) and its own providers.

A brand is offered only where the patient can actually connect: one of its portal endpoints is the FHIR
base of a provider the tenant has enabled (the tenant's client registration is what makes the connection
possible). A provider no loaded brand points to is offered under its own name.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy.orm import Session

from auth_service.pages.directory_search import DirectoryEntry
from auth_service.services.context import ServiceContext
from auth_service.services.errors import ServiceError
from auth_service.services.profiles import ClientProfile, enabled_provider_ids, resolve_profile
from auth_service.services.tenants import get_practice_settings
from connectors.smart import normalize_issuer
from connectors.smart.brands import Brand
from store.brand_directories import brand_from_json, directory_versions, tenant_brands
from store.models import Tenant

__all__ = ["TenantDirectory", "load_directory", "reachable_brands"]

logger = logging.getLogger(__name__)


class TenantDirectory:
    """The entries of one tenant's connect page, and the profiles (scopes) of the providers behind them."""

    def __init__(self, tenant_name: str, entries: list[DirectoryEntry], profiles: dict[str, ClientProfile]):
        self.tenant_name = tenant_name
        self.entries = entries
        self.profiles = profiles
        self._by_key = {e.key: e for e in entries}

    def find(self, key: str) -> DirectoryEntry | None:
        return self._by_key.get(key)


def _base(url: str) -> str:
    return normalize_issuer(url).rstrip("/")


def _brand_entries(brand: Brand, by_base: dict[str, str]) -> list[DirectoryEntry]:
    entries: list[DirectoryEntry] = []
    for number, portal in enumerate(brand.portals):
        provider_id = next((by_base[b] for b in (_base(e) for e in portal.endpoints) if b in by_base), None)
        if provider_id is None:
            continue
        where = brand.locations[0] if brand.locations else None
        if where and len(brand.locations) > 1:
            where = f"{where} and {len(brand.locations) - 1} more"
        portal_name = portal.name if portal.name and portal.name != brand.name else None
        detail = " · ".join(p for p in (portal_name, where) if p) or None
        digest = hashlib.sha256(f"{brand.key}|{number}".encode()).hexdigest()[:24]
        keywords = " ".join([*brand.aliases, *(brand.locations), portal.name or ""])
        entries.append(
            DirectoryEntry(f"b-{digest}", brand.name, detail, portal.logo or brand.logo, provider_id, keywords)
        )
    return entries


def _profiles(ctx: ServiceContext, session: Session, tenant: Tenant) -> dict[str, ClientProfile]:
    practice = get_practice_settings(tenant)
    profiles: dict[str, ClientProfile] = {}
    for provider_id in enabled_provider_ids(session, tenant, practice):
        try:
            profiles[provider_id] = resolve_profile(session, ctx.cipher, ctx.settings, tenant.id, provider_id)
        except ServiceError as exc:
            logger.info("provider %s of tenant %s left off the connect page: %s", provider_id, tenant.id, exc.code)
    return profiles


#: (tenant, its directories' versions, provider bases) -> brand entries; a few tenants' worth, rebuilt on change
_CACHE: dict[str, tuple[tuple[Any, ...], list[DirectoryEntry]]] = {}
_CACHE_TENANTS = 64


def _brand_entry_list(session: Session, tenant_id: str, by_base: dict[str, str]) -> list[DirectoryEntry]:
    """Entries of the tenant's brands: built once per version of its directories and providers, not per keystroke."""
    versions = tuple(session.execute(directory_versions(tenant_id)).all())
    key = (versions, tuple(sorted(by_base.items())))
    cached = _CACHE.get(tenant_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    entries: list[DirectoryEntry] = []
    seen: set[str] = set()
    for brand in tenant_brands(session, tenant_id):
        for entry in _brand_entries(brand, by_base):
            if entry.key not in seen:
                seen.add(entry.key)
                entries.append(entry)
    if len(_CACHE) >= _CACHE_TENANTS and tenant_id not in _CACHE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[tenant_id] = (key, entries)
    return entries


def load_directory(ctx: ServiceContext, tenant_id: str) -> TenantDirectory | None:
    """The tenant's directory, or ``None`` when the tenant does not exist (any more)."""
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            return None
        profiles = _profiles(ctx, session, tenant)
        by_base = {_base(p.fhir_base): pid for pid, p in profiles.items()}
        entries = list(_brand_entry_list(session, tenant_id, by_base))
        tenant_name = tenant.name
    branded = {e.provider_id for e in entries}
    for provider_id, profile in profiles.items():
        if provider_id not in branded:
            name = str(profile.config.get("displayName") or profile.config.get("display_name") or "")
            entries.append(DirectoryEntry(f"p-{provider_id}", name or profile.display_name, None, None, provider_id))
    return TenantDirectory(tenant_name, entries, profiles)


def reachable_brands(ctx: ServiceContext, tenant_id: str, brands: list[dict[str, Any]]) -> int:
    """How many of these stored brands a patient of the tenant can connect to today."""
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        profiles = _profiles(ctx, session, tenant) if tenant is not None else {}
    by_base = {_base(p.fhir_base): pid for pid, p in profiles.items()}
    return sum(1 for item in brands if _brand_entries(brand_from_json(item), by_base))
