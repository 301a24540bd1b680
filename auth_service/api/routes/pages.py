"""Patient pages after the EHR round trip: the status ("done") page, and disconnect with a confirmation.

The connect page itself (finding a health system) is ``connect_pages``. The done page names the practice and
the health system, and links back to the host app only on an origin the tenant allowed (``return_to``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from auth_service.api.browser_seal import csrf_matches, csrf_token
from auth_service.api.connect_cookies import read_choice, read_connection_id
from auth_service.api.deps import CtxDep, browser_session
from auth_service.api.errors import ApiError
from auth_service.core.return_to import ReturnToError, check_return_to
from auth_service.pages.rendering import render_error, templates
from auth_service.pages.scope_text import describe_scopes
from auth_service.services import connections as conns
from auth_service.services.context import ServiceContext
from auth_service.services.errors import ServiceError
from auth_service.services.profiles import resolve_profile
from auth_service.services.tenants import get_practice_settings
from auth_service.tenants.settings import TenantSettingInvalidError
from connectors.errors import ConfigurationError
from store.models import Connection, Tenant

__all__ = ["render_error", "router", "templates"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["pages"], include_in_schema=False)
_STATUS_TEXT = {
    "active": "Connected",
    "needs_reauth": "Needs you to sign in again",
    "disabled": "Paused by your practice",
    "disconnected": "Disconnected",
    "client_rejected": "Paused: your practice must fix its app's access (nothing for you to do)",
    "token_undecryptable": "Paused: your practice must restore its stored connection data, or you connect again",
}


def _status_text(conn: Connection) -> str:
    """The status in words; an active connection a new sign-in renewed says so (and since when)."""
    if conn.status == "active" and conn.reauthorized_at is not None:
        return f"Reconnected {_fmt(conn.reauthorized_at)}"
    return _STATUS_TEXT.get(conn.status, conn.status)


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "Not yet"


def _session_connection(request: Request, ctx: ServiceContext) -> Connection:
    """The connection this browser created (its sealed cookie, bound to the session id)."""
    connection_id = read_connection_id(request, ctx)
    if connection_id is None:
        raise ApiError("not_connected", "no connection was made in this browser")
    with ctx.db.session() as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise ApiError("not_connected", "the connection no longer exists")
        session.expunge(conn)
        return conn


def _names(request: Request, ctx: ServiceContext, conn: Connection) -> dict[str, Any]:
    """The practice, the health system (as the patient picked it) and the way back to the host app."""
    choice = read_choice(request, ctx)
    if choice is not None and (choice.tenant_id, choice.provider_id) != (conn.tenant_id, conn.provider_id):
        choice = None  # a choice from another flow in this browser
    with ctx.db.session() as session:
        tenant = session.get(Tenant, conn.tenant_id)
        tenant_name = tenant.name if tenant is not None else "Your practice"
        try:  # an unreadable stored setting never keeps a patient from the status page or from disconnecting
            origins = get_practice_settings(tenant).allowed_return_origins if tenant is not None else []
        except TenantSettingInvalidError as exc:
            logger.warning("done page of tenant %s: no return link: %s", conn.tenant_id, exc.message)
            origins = []
        try:
            profile = resolve_profile(session, ctx.cipher, ctx.settings, conn.tenant_id, conn.provider_id)
            system_name = profile.display_name
        except (ServiceError, ConfigurationError):  # a name only: no flow hangs on it (a switch neither true nor false)
            system_name = "your health system"
    return_url = None
    if choice is not None and choice.return_to:
        try:
            return_url = check_return_to(choice.return_to, origins)
        except ReturnToError:
            logger.info("return_to of tenant %s is no longer on its allowed origins: not shown", conn.tenant_id)
    if choice is not None and choice.system_name:
        system_name = choice.system_name
    return {"tenant_name": tenant_name, "system_name": system_name, "return_url": return_url}


@router.get("/connect/done", response_class=HTMLResponse)
def done_page(request: Request, ctx: CtxDep) -> Response:
    try:
        conn = _session_connection(request, ctx)
    except ApiError as exc:
        return render_error(request, exc)
    context = {
        **_names(request, ctx, conn),
        "connection": conn,
        "status_text": _status_text(conn),
        "last_sync": _fmt(conn.last_sync_at),
        "scope_lines": describe_scopes(conn.granted_scopes or ""),
        # the disconnect could not make the EHR cancel the access (only a note: a forged query shows just that)
        "not_revoked": conn.status == "disconnected" and request.query_params.get("revoked") == "no",
    }
    return templates.TemplateResponse(request, "done.html", context)


@router.get("/connect/disconnect", response_class=HTMLResponse)
def confirm_disconnect_page(request: Request, ctx: CtxDep) -> Response:
    """Asks before disconnecting, and says what happens to the records already copied."""
    try:
        conn = _session_connection(request, ctx)
    except ApiError as exc:
        return render_error(request, exc)
    if conn.status == "disconnected":
        return RedirectResponse("/connect/done", status_code=303)
    context = {
        **_names(request, ctx, conn),
        "connection": conn,
        "csrf": csrf_token(ctx, browser_session(request) or ""),
    }
    return templates.TemplateResponse(request, "disconnect.html", context)


@router.post("/connect/disconnect")
def disconnect_page(
    request: Request,
    ctx: CtxDep,
    connection_id: Annotated[str, Form(max_length=64)],
    csrf: Annotated[str, Form(max_length=128)],
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """The confirmed disconnect: revoke at the EHR, delete tokens, show the status page again."""
    try:
        conn = _session_connection(request, ctx)
        sid = browser_session(request) or ""
        # sealed, bound to this session and to the disconnect: it still opens after a vault key rotation
        if conn.id != connection_id or not csrf_matches(ctx, sid, csrf):
            raise ApiError(
                "invalid_request",
                "this disconnect request did not come from the status page, or its form was open for more than an hour:"
                " open the page again",
            )
    except ApiError as exc:
        return render_error(request, exc)
    if confirm != "yes":
        return RedirectResponse("/connect/disconnect", status_code=303)
    answer = conns.disconnect(ctx, conn, actor="patient")
    not_revoked = not answer["revoked_at_server"] and answer["revocation"] != "no_tokens"
    return RedirectResponse("/connect/done?revoked=no" if not_revoked else "/connect/done", status_code=303)
