"""A tenant loads, lists and removes the SMART brands bundles behind its patients' connect page."""

from __future__ import annotations

from typing import Any

from auth_service.services.audit import record_audit
from auth_service.services.context import ServiceContext
from auth_service.services.directory import reachable_brands
from auth_service.services.errors import ConfigValidationError, InvalidInputError, NotFoundError
from connectors.smart.brands import BrandsBundle, BrandsBundleError, directory_name_problem, parse_brands_bundle
from store.brand_directories import BrandDirectory, delete_directory, list_directories, save_directory
from store.models import Tenant

__all__ = ["check_bundle", "delete_brands", "list_brands", "load_brands"]


def _summary(ctx: ServiceContext, row: BrandDirectory) -> dict[str, Any]:
    return {
        "source": row.source,
        "brands": row.brand_count,
        "reachable": reachable_brands(ctx, row.tenant_id, row.brands),
        "bundle_timestamp": row.bundle_timestamp,
        "loaded_at": row.loaded_at.isoformat(),
    }


def check_bundle(source: str, raw: bytes) -> BrandsBundle:
    """The directory name and the parsed bundle, or a ``ServiceError`` naming each problem (no database work)."""
    if problem := directory_name_problem(source):
        raise InvalidInputError(problem)
    try:
        return parse_brands_bundle(raw)
    except BrandsBundleError as exc:
        raise ConfigValidationError(str(exc), fields=[{"field": "body", "message": p} for p in exc.problems]) from None


def load_brands(
    ctx: ServiceContext, tenant_id: str, source: str, bundle: bytes | BrandsBundle, actor: str
) -> dict[str, Any]:
    """Replace the tenant's directory ``source`` with the bundle's brands (all or nothing).

    ``reachable`` counts the brands a patient can connect to: those with an endpoint that is the FHIR base
    of one of the tenant's enabled providers. The others are kept, and appear once such a provider is added.
    """
    parsed = check_bundle(source, bundle) if isinstance(bundle, bytes) else bundle
    with ctx.db.session() as session, session.begin():
        if session.get(Tenant, tenant_id) is None:
            raise NotFoundError(f"tenant {tenant_id!r} does not exist")
        row = save_directory(session, tenant_id, source, parsed)
        detail = {"source": source, "brands": row.brand_count, "bundle_timestamp": row.bundle_timestamp}
        record_audit(session, action="brands.load", outcome="success", tenant_id=tenant_id, actor=actor, detail=detail)
        session.expunge(row)
    return _summary(ctx, row)


def list_brands(ctx: ServiceContext, tenant_id: str) -> list[dict[str, Any]]:
    with ctx.db.session() as session:
        rows = list_directories(session, tenant_id)
        for row in rows:
            session.expunge(row)
    return [_summary(ctx, row) for row in rows]


def delete_brands(ctx: ServiceContext, tenant_id: str, source: str, actor: str) -> None:
    with ctx.db.session() as session, session.begin():
        if not delete_directory(session, tenant_id, source):
            raise NotFoundError(f"no brands directory {source!r} for this tenant")
        record_audit(
            session,
            action="brands.delete",
            outcome="success",
            tenant_id=tenant_id,
            actor=actor,
            detail={"source": source},
        )
