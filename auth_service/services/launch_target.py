"""Which tenant and provider an EHR launch is for (SAL-06), decided before any network call.

The EHR sends only ``iss`` (its FHIR base) and an opaque ``launch``. When one tenant's provider has that issuer,
the launch is that provider's. When several do (two clinics on one EHR instance, e.g. one Epic organization),
the issuer cannot say which clinic launched, so nothing is guessed: each clinic registers its own launch URL
in the EHR, ``{APP_BASE_URL}/api/integrations/smart/launch/{tenant}`` (and ``/{provider}`` when the tenant has
two providers on that EHR), which narrows the candidates; the shared URL is refused with ``ambiguous_issuer``.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from auth_service.services.context import ServiceContext
from auth_service.services.errors import IssuerRefusedError, ServiceError
from auth_service.services.profiles import enabled_provider_ids, resolve_profile
from auth_service.services.tenants import get_practice_settings
from auth_service.tenants.settings import TenantSettingInvalidError
from connectors.errors import EhrSyncError
from connectors.smart import is_issuer_allowed, normalize_issuer
from store.models import Tenant

__all__ = ["LAUNCH_PATH", "check_allowlisted", "find_launch_target"]

logger = logging.getLogger(__name__)

#: The EHR launch route; a clinic-specific launch URL appends ``/{tenant}`` (and ``/{provider}``).
LAUNCH_PATH = "/api/integrations/smart/launch"


def check_allowlisted(ctx: ServiceContext, url: str) -> None:
    if not is_issuer_allowed(url, ctx.settings.SMART_ISSUER_ALLOWLIST):
        raise IssuerRefusedError("issuer is not on SMART_ISSUER_ALLOWLIST")


def _matches(ctx: ServiceContext, session: Session, wanted: str, tenant_id: str | None) -> list[tuple[str, str]]:
    """Every enabled (tenant, provider) whose configured issuer or FHIR base is ``wanted``, in a stable order."""
    query = select(Tenant).order_by(Tenant.id)
    if tenant_id is not None:
        query = query.where(Tenant.id == tenant_id)
    found: list[tuple[str, str]] = []
    for tenant in session.scalars(query):
        try:
            practice = get_practice_settings(tenant)
        except TenantSettingInvalidError as exc:  # one tenant's bad row never stops another tenant's launch
            logger.warning("EHR launch: tenant %s skipped: %s", tenant.id, exc.message)
            continue
        for provider_id in enabled_provider_ids(session, tenant, practice):
            if wanted in _issuers(ctx, session, tenant.id, provider_id):
                found.append((tenant.id, provider_id))
    return found


def _issuers(ctx: ServiceContext, session: Session, tenant_id: str, provider_id: str) -> tuple[str, ...]:
    """The provider's issuer and FHIR base, normalized; none when its config cannot serve a flow. The shared launch
    URL reads every tenant's providers: one tenant's config that does not resolve (a ServiceError, a client auth its
    vendor refuses, a sealed member that does not open) or names an issuer that is no URL is skipped, never an error
    that stops another tenant's launch."""
    try:
        profile = resolve_profile(session, ctx.cipher, ctx.settings, tenant_id, provider_id)
        return normalize_issuer(profile.issuer), normalize_issuer(profile.fhir_base)
    except ServiceError:
        return ()
    except (EhrSyncError, ValueError) as exc:
        logger.warning("EHR launch: provider %s of tenant %s skipped: %s", provider_id, tenant_id, type(exc).__name__)
        return ()


def _ambiguous(ctx: ServiceContext, matches: list[tuple[str, str]]) -> IssuerRefusedError:
    """The refusal for a launch more than one (tenant, provider) could be; it names no tenant (the caller is
    anonymous), only the launch URL shape the clinic must register. The log names them for the operator."""
    tenants = sorted({t for t, _ in matches})
    logger.warning(
        "EHR launch refused: its issuer is configured for %d tenant/provider pairs (tenants: %s)",
        len(matches),
        ", ".join(tenants),
    )
    base = ctx.settings.APP_BASE_URL.rstrip("/") + LAUNCH_PATH
    if len(tenants) > 1:
        message = (
            "this EHR is configured for more than one clinic; register the clinic-specific launch URL"
            f" {base}/<tenant id> in the EHR"
        )
    else:
        message = (
            "this clinic has more than one provider for this EHR; register the provider-specific launch URL"
            f" {base}/<tenant id>/<provider id> in the EHR"
        )
    return IssuerRefusedError(message, code="ambiguous_issuer")


def find_launch_target(
    ctx: ServiceContext, iss: str, *, tenant_id: str | None = None, provider_id: str | None = None
) -> tuple[str, str]:
    """The one (tenant, provider) whose configured issuer or FHIR base is exactly ``iss``, among those the launch
    URL names (``tenant_id``, ``provider_id``). None: ``invalid_issuer``; more than one: ``ambiguous_issuer``
    (never the first the database yields). No network call is made here."""
    check_allowlisted(ctx, iss)
    with ctx.db.session() as session:
        matches = _matches(ctx, session, normalize_issuer(iss), tenant_id)
    if provider_id is not None:
        matches = [m for m in matches if m[1] == provider_id]
    if not matches:
        if tenant_id is None:
            raise IssuerRefusedError("no tenant is configured for this issuer")
        raise IssuerRefusedError("the clinic in this launch URL has no enabled provider for this issuer")
    if len(matches) > 1:
        raise _ambiguous(ctx, matches)
    return matches[0]
