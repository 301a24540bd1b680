"""A tenant's ``return_to`` check, shared by the connect-link API (at issue) and the done page (at display)."""

from __future__ import annotations

from auth_service.core.return_to import ReturnToError, check_return_to
from auth_service.services.context import ServiceContext
from auth_service.services.tenants import get_practice_settings
from store.models import Tenant

__all__ = ["ReturnToError", "tenant_return_to"]


def tenant_return_to(ctx: ServiceContext, tenant_id: str, url: str) -> str:
    """``url`` when it is on one of the tenant's ``allowedReturnOrigins``, else ``ReturnToError`` saying why."""
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        origins = get_practice_settings(tenant).allowed_return_origins if tenant is not None else []
    if not origins:
        raise ReturnToError("this practice allows no return_to: set allowedReturnOrigins in its practice settings")
    return check_return_to(url, origins)
