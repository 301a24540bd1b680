"""Request dependencies: the service context, the admin's tenant (API key) and the browser session."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from auth_service.api.errors import ApiError
from auth_service.services.context import ServiceContext
from auth_service.services.tenants import resolve_api_key

__all__ = [
    "CONNECTION_COOKIE",
    "SESSION_COOKIE",
    "Admin",
    "AdminDep",
    "CtxDep",
    "browser_session",
    "ensure_browser_session",
    "get_ctx",
    "set_cookie",
    "set_session_cookie",
]

SESSION_COOKIE = "ehrsync_sid"
CONNECTION_COOKIE = "ehrsync_conn"


def get_ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]


@dataclass(frozen=True)
class Admin:
    """The caller of the admin API: a tenant, identified by its API key (never by a parameter)."""

    tenant_id: str

    @property
    def actor(self) -> str:
        return f"api_key:{self.tenant_id}"


def _presented_key(request: Request) -> str | None:
    """The one API key the caller presents; two different keys (headers repeated or both kinds) are refused."""
    keys = [k.strip() for k in request.headers.getlist("x-api-key") if k.strip()]
    for auth in request.headers.getlist("authorization"):
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            keys.append(auth[7:].strip())
    if len(set(keys)) > 1:
        raise ApiError(
            "conflicting_credentials",
            "the request names more than one API key ('Authorization: Bearer' and 'X-API-Key' differ); send one",
        )
    return keys[0] if keys else None


def get_admin(request: Request, ctx: CtxDep) -> Admin:
    key = _presented_key(request)
    if not key:
        raise ApiError("unauthorized", "send an API key in 'Authorization: Bearer' or 'X-API-Key'")
    # BEGIN IMMEDIATE: a deferred transaction that reads then writes fails at once ("database is locked")
    # on SQLite when another process (a Dagster run) committed in between; busy_timeout cannot help there.
    with ctx.db.locked_session() as session:
        tenant_id = resolve_api_key(session, key)
    if tenant_id is None:
        raise ApiError("unauthorized", "API key is unknown or revoked")
    return Admin(tenant_id)


AdminDep = Annotated[Admin, Depends(get_admin)]


def browser_session(request: Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    return value if value and 20 <= len(value) <= 100 else None


def ensure_browser_session(request: Request) -> tuple[str, bool]:
    """The browser's session id and whether it is new (the route must then set the cookie)."""
    current = browser_session(request)
    if current:
        return current, False
    return secrets.token_urlsafe(32), True


def set_session_cookie(response: Response, ctx: ServiceContext, sid: str) -> None:
    """HttpOnly, SameSite=Lax, Secure on https: the cookie a ``state`` is bound to (SAL-09)."""
    set_cookie(response, ctx, SESSION_COOKIE, sid, max_age=None)


def set_cookie(response: Response, ctx: ServiceContext, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=ctx.settings.cookie_secure,
        path="/",
    )
