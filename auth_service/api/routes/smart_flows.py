"""Browser-facing SMART endpoints: EHR launch, standalone login, callback (SAL-06..13, SAL-39)."""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from auth_service.api.deps import (
    CONNECTION_COOKIE,
    CtxDep,
    browser_session,
    ensure_browser_session,
    set_cookie,
    set_session_cookie,
)
from auth_service.api.errors import ApiError
from auth_service.core.links import InvalidLinkError
from auth_service.services.launch import begin_authorization, complete_authorization, find_launch_target

__all__ = ["router", "safe_target"]

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/integrations/smart", tags=["smart"])
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def safe_target(value: str | None) -> str | None:
    """Only same-origin paths: ``/x`` yes, ``//evil``, ``/\\evil`` or absolute URLs no (no open redirect)."""
    if value is None or value == "":
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\\"):
        raise ApiError("invalid_redirect", "return_to must be a path on this service")
    return value


def _redirect(ctx_request: Request, url: str, sid: str, new: bool) -> RedirectResponse:
    response = RedirectResponse(url, status_code=302, headers=_NO_STORE)
    if new:
        set_session_cookie(response, ctx_request.app.state.ctx, sid)
    return response


@router.get("/launch", summary="EHR launch (SAL-06): iss + launch from the EHR")
def ehr_launch(
    request: Request,
    ctx: CtxDep,
    iss: Annotated[str, Query(min_length=1, max_length=2000)],
    launch: Annotated[str, Query(min_length=1, max_length=4000)],
) -> RedirectResponse:
    tenant_id, provider_id = find_launch_target(ctx, iss)  # allow-list first: no network call before this
    sid, new = ensure_browser_session(request)
    url = begin_authorization(ctx, tenant_id=tenant_id, provider_id=provider_id, browser_session=sid, launch=launch)
    return _redirect(request, url, sid, new)


@router.get("/login", summary="Standalone launch (SAL-07) for a tenant's provider, or via a connect link")
def standalone_login(
    request: Request,
    ctx: CtxDep,
    provider: Annotated[str, Query(min_length=1, max_length=64)],
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    link: Annotated[str | None, Query(max_length=2000)] = None,
    return_to: Annotated[str | None, Query(max_length=500)] = None,
) -> RedirectResponse:
    user_ref: str | None = None
    if link:
        try:
            claims = ctx.links.verify(link)
        except InvalidLinkError as exc:
            raise ApiError("invalid_link", str(exc)) from None
        if tenant and tenant != claims.tenant_id:
            raise ApiError("invalid_link", "connect link belongs to another tenant")
        tenant, user_ref = claims.tenant_id, claims.user_ref
    if not tenant:
        raise ApiError("invalid_request", "give 'tenant' or a connect 'link'")
    target = safe_target(return_to)
    sid, new = ensure_browser_session(request)
    url = begin_authorization(
        ctx, tenant_id=tenant, provider_id=provider, browser_session=sid, user_ref=user_ref, redirect_target=target
    )
    return _redirect(request, url, sid, new)


@router.get("/callback", summary="OAuth redirect target: consumes state, exchanges the code (SAL-13, SAL-39)")
def callback(
    request: Request,
    ctx: CtxDep,
    state: Annotated[str | None, Query(max_length=500)] = None,
    code: Annotated[str | None, Query(max_length=4000)] = None,
    # generous limits: an EHR's long error text is capped when shown, never refused with a 422
    error: Annotated[str | None, Query(max_length=2000)] = None,
    error_description: Annotated[str | None, Query(max_length=16000)] = None,
) -> RedirectResponse:
    result = complete_authorization(
        ctx,
        state=state,
        code=code,
        error=error,
        error_description=error_description,
        browser_session=browser_session(request),
    )
    response = RedirectResponse(result.redirect_target or "/connect/done", status_code=303, headers=_NO_STORE)
    sid = browser_session(request) or ""
    marker = ctx.sessions.sign(result.connection_id, hashlib.sha256(sid.encode()).hexdigest(), ttl_seconds=86400)
    set_cookie(response, ctx, CONNECTION_COOKIE, marker, max_age=86400)
    return response
