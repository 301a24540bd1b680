"""CLI-callable set-up: seed tenants from a JSON file, create a tenant with its first admin API key, load a
tenant's brands directory from a file.

The input is checked before the service's settings, database and vault are imported (at the top: the seed's
schema and the brands' limit only): ``ehrsync auth seed`` of a bad file or ``bootstrap`` of a bad id is refused
for a fraction of the CPU (issue 14, tests/ehrsync/test_cli_imports.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from auth_service.tenants.settings import TenantSeed, load_tenant_seed, tenant_seed
from connectors.errors import ConfigurationError
from connectors.smart.brands import MAX_BUNDLE_BYTES, BrandsBundleError, directory_name_problem, parse_brands_bundle

if TYPE_CHECKING:
    from auth_service.core.config import Settings
    from auth_service.services.tenants import BootstrapResult

__all__ = ["bootstrap_admin", "load_brands_file", "load_tenants_file"]


def _check_provider_configs(path: str | Path, seeds: list[TenantSeed], settings: Settings) -> None:
    """Each seeded ``providerConfigs`` entry as the admin API checks one (the vendor's schema, the bounds, its client
    auth method): a bad one is named now, not at the first patient's launch or the first sync."""
    from auth_service.services.provider_admin import config_problems, known_provider

    problems: list[str] = []
    for seed in seeds:
        for provider_id, config in seed.practice_settings.ehr_integrations.provider_configs.items():
            where = f"tenant {seed.id!r} providerConfigs.{provider_id}"
            if not known_provider(provider_id):
                problems.append(f"{where}: unknown provider")
                continue
            for error in config_problems(provider_id, config, settings):
                field = "" if error["field"] == "config" else f".{error['field']}"  # "config": the entry as a whole
                problems.append(f"{where}{field}: {error['message']}")
    if problems:
        raise ConfigurationError(f"tenant seed {path}: " + "; ".join(problems))


def load_tenants_file(path: str | Path, settings: Settings | None = None) -> list[str]:
    """``ehrsync auth seed FILE``: upsert every tenant in a seed file; returns their ids."""
    seeds = load_tenant_seed(path)  # a bad file is named before any database work
    from auth_service.core.config import load_settings
    from auth_service.services.context import build_context
    from auth_service.services.tenants import upsert_tenant

    settings = settings or load_settings()
    _check_provider_configs(path, seeds, settings)
    ctx = build_context(settings)
    try:
        with ctx.db.session() as session, session.begin():
            return [upsert_tenant(session, seed, ctx.cipher).id for seed in seeds]
    finally:
        ctx.close()


def load_brands_file(tenant_id: str, source: str, path: str | Path, settings: Settings | None = None) -> int:
    """``ehrsync auth brands``: load a SMART brands bundle file as the tenant's directory ``source``."""
    if problem := directory_name_problem(source):
        raise ConfigurationError(problem)
    file = Path(path)
    if file.stat().st_size > MAX_BUNDLE_BYTES:  # never read a file the parser would refuse anyway
        raise BrandsBundleError([f"{file} is over the {MAX_BUNDLE_BYTES}-byte limit"])
    bundle = parse_brands_bundle(file.read_bytes())  # a bad file is named before the service (its database) loads
    from auth_service.core.config import load_settings
    from auth_service.services.brand_admin import load_brands
    from auth_service.services.context import build_context

    ctx = build_context(settings or load_settings())
    try:
        return int(load_brands(ctx, tenant_id, source, bundle, actor="cli")["brands"])
    finally:
        ctx.close()


def bootstrap_admin(
    tenant_id: str, name: str, settings: Settings | None = None, key_name: str = "admin"
) -> BootstrapResult:
    """``ehrsync auth bootstrap --tenant ID --name NAME``: create the tenant if needed and a new API key."""
    where = f"--tenant {tenant_id[:80]!r} --name {name[:80]!r}"
    seed = tenant_seed({"id": tenant_id, "name": name}, where)  # a bad id or name is named before any database work
    from sqlalchemy.orm import defer

    from auth_service.core.config import load_settings
    from auth_service.services.context import build_context
    from auth_service.services.tenants import bootstrap_existing, bootstrap_tenant
    from store.models import Tenant

    ctx = build_context(settings or load_settings())
    try:
        with ctx.db.session() as session, session.begin():
            # its settings never loaded into the row (a hand-edited row that is not JSON would stop the command):
            # kept as stored, read as text for the warnings only
            existing = session.get(Tenant, tenant_id, options=[defer(Tenant.settings)])
            if existing is not None:
                return bootstrap_existing(session, existing, seed.name, key_name)
            return bootstrap_tenant(session, seed, ctx.cipher, key_name)
    finally:
        ctx.close()
