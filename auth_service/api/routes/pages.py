"""Patient pages: pick a provider and see what is shared, then the status page with a disconnect button."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from auth_service.api.deps import (
    CONNECTION_COOKIE,
    CtxDep,
    browser_session,
    csrf_token,
    ensure_browser_session,
    set_session_cookie,
)
from auth_service.api.errors import ApiError, http_status
from auth_service.core.links import InvalidLinkError
from auth_service.pages.scope_text import describe_scopes
from auth_service.services import connections as conns
from auth_service.services.context import ServiceContext
from auth_service.services.errors import ServiceError
from auth_service.services.profiles import enabled_provider_ids, resolve_profile
from auth_service.services.tenants import get_practice_settings
from store.models import Connection, Tenant

__all__ = ["render_error", "router", "templates"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["pages"], include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent.parent / "templates"))
_STATUS_TEXT = {
    "active": "Connected",
    "needs_reauth": "Needs you to sign in again",
    "disabled": "Paused by your practice",
    "disconnected": "Disconnected",
    "client_rejected": "Paused: your practice must check its EHR app registration",
    "token_undecryptable": "Paused: your practice must restore its stored connection data, or you connect again",
}


def render_error(request: Request, error: ServiceError) -> Response:
    return templates.TemplateResponse(
        request, "error.html", {"code": error.code, "message": error.message}, status_code=http_status(error)
    )


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "Not yet"


@router.get("/connect", response_class=HTMLResponse)
def connect_page(request: Request, ctx: CtxDep, link: Annotated[str, Query(max_length=2000)]) -> Response:
    """The patient opens the host app's connect link: providers to choose from, what will be shared."""
    try:
        claims = ctx.links.verify(link)
    except InvalidLinkError as exc:
        return render_error(request, ApiError("invalid_link", str(exc)))
    with ctx.db.session() as session:
        tenant = session.get(Tenant, claims.tenant_id)
        if tenant is None:
            return render_error(request, ApiError("invalid_link", "this practice no longer exists"))
        practice = get_practice_settings(tenant)
        providers = []
        scope_lines: list[str] = []
        for provider_id in enabled_provider_ids(session, tenant, practice):
            try:
                profile = resolve_profile(session, ctx.cipher, ctx.settings, tenant.id, provider_id)
            except ServiceError:
                continue
            providers.append({"id": provider_id, "display_name": profile.display_name})
            scope_lines.extend(line for line in describe_scopes(profile.scopes) if line not in scope_lines)
        tenant_name = tenant.name
    sid, new = ensure_browser_session(request)
    response = templates.TemplateResponse(
        request,
        "connect.html",
        {"tenant_name": tenant_name, "providers": providers, "scope_lines": scope_lines, "link": link},
    )
    if new:
        set_session_cookie(response, ctx, sid)
    return response


def _session_connection(request: Request, ctx: ServiceContext) -> Connection:
    """The connection this browser created (signed cookie bound to the session id)."""
    marker = request.cookies.get(CONNECTION_COOKIE)
    sid = browser_session(request) or ""
    if not marker or not sid:
        raise ApiError("not_connected", "no connection was made in this browser")
    try:
        claims = ctx.sessions.verify(marker)
    except InvalidLinkError:
        raise ApiError("not_connected", "no connection was made in this browser") from None
    if not hmac.compare_digest(claims.user_ref, hashlib.sha256(sid.encode()).hexdigest()):
        raise ApiError("not_connected", "no connection was made in this browser")
    with ctx.db.session() as session:
        conn = session.get(Connection, claims.tenant_id)
        if conn is None:
            raise ApiError("not_connected", "the connection no longer exists")
        session.expunge(conn)
        return conn


@router.get("/connect/done", response_class=HTMLResponse)
def done_page(request: Request, ctx: CtxDep) -> Response:
    try:
        conn = _session_connection(request, ctx)
    except ApiError as exc:
        return render_error(request, exc)
    with ctx.db.session() as session:
        profile = resolve_profile(session, ctx.cipher, ctx.settings, conn.tenant_id, conn.provider_id)
    context = {
        "connection": conn,
        "provider_name": profile.display_name,
        "status_text": _STATUS_TEXT.get(conn.status, conn.status),
        "last_sync": _fmt(conn.last_sync_at),
        "scope_lines": describe_scopes(conn.granted_scopes or ""),
        "csrf": csrf_token(ctx, browser_session(request) or ""),
    }
    return templates.TemplateResponse(request, "done.html", context)


@router.post("/connect/disconnect")
def disconnect_page(
    request: Request,
    ctx: CtxDep,
    connection_id: Annotated[str, Form(max_length=64)],
    csrf: Annotated[str, Form(max_length=128)],
) -> Response:
    """The patient's disconnect button: revoke at the EHR, delete tokens, show the status page again."""
    try:
        conn = _session_connection(request, ctx)
        sid = browser_session(request) or ""
        # bytes: compare_digest raises TypeError on non-ASCII str, and the form value is the browser's text
        if conn.id != connection_id or not hmac.compare_digest(csrf.encode(), csrf_token(ctx, sid).encode()):
            raise ApiError("invalid_request", "this disconnect request did not come from the status page")
    except ApiError as exc:
        return render_error(request, exc)
    conns.disconnect(ctx, conn, actor="patient")
    return RedirectResponse("/connect/done", status_code=303)
