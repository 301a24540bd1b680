"""Browser-facing SMART endpoints: EHR launch (shared or clinic-specific URL), standalone login, callback
(SAL-06..13, SAL-39); a reload of the callback is answered from the first request (``callback_replay``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from auth_service.api.browser_seal import open_link
from auth_service.api.connect_cookies import ConnectChoice, remember_choice, remember_connection
from auth_service.api.deps import (
    CtxDep,
    browser_session,
    ensure_browser_session,
    set_session_cookie,
)
from auth_service.api.errors import ApiError
from auth_service.core.links import InvalidLinkError
from auth_service.core.sealed_links import MAX_LINK_CHARS
from auth_service.pages.rendering import render_error, templates
from auth_service.services.callback_replay import CallbackResult, StillConnecting, replay_callback
from auth_service.services.context import ServiceContext
from auth_service.services.directory import load_directory
from auth_service.services.errors import NotFoundError, ProviderUnusableError, StateRefusedError, service_error_from
from auth_service.services.launch import begin_authorization, complete_authorization, find_launch_target
from connectors.errors import EhrSyncError

__all__ = ["router", "safe_target"]

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/integrations/smart", tags=["smart"])
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_NOT_OFFERED = (
    "this practice offers no sign-in with that health system here: start from the link or the EHR launch your "
    "practice gave you"
)


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


_Iss = Annotated[str, Query(min_length=1, max_length=2000)]
_Launch = Annotated[str, Query(min_length=1, max_length=4000)]
_TenantId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
_ProviderId = Annotated[str, Path(min_length=1, max_length=64)]


def _ehr_launch(
    request: Request, ctx: ServiceContext, iss: str, launch: str, tenant: str | None, provider: str | None
) -> Response:
    """Resolve the launch's tenant and provider (allow-list first: no network call before it), then authorize.

    A browser (``Accept: text/html``) that cannot be served gets the error page, without the ``launch`` value
    and without "Try again" (only the EHR can launch again); other callers get the JSON error.
    """
    try:
        tenant_id, provider_id = find_launch_target(ctx, iss, tenant_id=tenant, provider_id=provider)
        sid, new = ensure_browser_session(request)
        url = begin_authorization(ctx, tenant_id=tenant_id, provider_id=provider_id, browser_session=sid, launch=launch)
    except EhrSyncError as exc:
        if "text/html" in request.headers.get("accept", ""):
            return render_error(request, service_error_from(exc), retry=False)
        raise
    return _redirect(request, url, sid, new)


@router.get("/launch", summary="EHR launch (SAL-06): iss + launch from the EHR")
def ehr_launch(request: Request, ctx: CtxDep, iss: _Iss, launch: _Launch) -> Response:
    return _ehr_launch(request, ctx, iss, launch, None, None)


@router.get("/launch/{tenant}", summary="EHR launch (SAL-06) through a clinic's own launch URL")
def ehr_launch_for_tenant(request: Request, ctx: CtxDep, tenant: _TenantId, iss: _Iss, launch: _Launch) -> Response:
    return _ehr_launch(request, ctx, iss, launch, tenant, None)


@router.get("/launch/{tenant}/{provider}", summary="EHR launch (SAL-06) through a clinic provider's launch URL")
def ehr_launch_for_provider(
    request: Request, ctx: CtxDep, tenant: _TenantId, provider: _ProviderId, iss: _Iss, launch: _Launch
) -> Response:
    return _ehr_launch(request, ctx, iss, launch, tenant, provider)


@dataclass(frozen=True)
class _LoginTarget:
    tenant_id: str
    provider_id: str
    user_ref: str | None
    choice: ConnectChoice | None


def _login_target(
    ctx: ServiceContext, provider: str | None, tenant: str | None, link: str | None, choice: str | None
) -> _LoginTarget:
    """Who is connecting to what: a connect link (and the health system picked on the connect page), or a tenant."""
    if not link:
        if choice:
            raise ApiError("invalid_request", "'choice' comes from the connect page and needs its 'link'")
        if not tenant:
            raise ApiError("invalid_request", "give 'tenant' or a connect 'link'")
        if not provider:
            raise ApiError("invalid_request", "give 'provider'")
        return _LoginTarget(tenant, provider, None, None)
    try:
        claims = open_link(ctx, link)  # a link of a key not configured (or a placeholder's): logged once, here
    except InvalidLinkError as exc:
        raise ApiError("invalid_link", str(exc)) from None
    if tenant and tenant != claims.tenant_id:
        raise ApiError("invalid_link", "connect link belongs to another tenant")
    name: str | None = None
    if choice:
        directory = load_directory(ctx, claims.tenant_id)
        entry = directory.find(choice) if directory is not None else None
        if entry is None:
            raise ApiError("invalid_request", "the health system picked is no longer offered: go back and pick again")
        provider, name = entry.provider_id, entry.name
    if not provider:
        raise ApiError("invalid_request", "pick a health system first ('choice' or 'provider')")
    picked = ConnectChoice(claims.tenant_id, provider, name, claims.return_to)
    return _LoginTarget(claims.tenant_id, provider, claims.user_ref, picked)


@router.get("/login", summary="Standalone launch (SAL-07) for a tenant's provider, or via a connect link")
def standalone_login(
    request: Request,
    ctx: CtxDep,
    provider: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    link: Annotated[str | None, Query(max_length=MAX_LINK_CHARS)] = None,
    return_to: Annotated[str | None, Query(max_length=500)] = None,
    choice: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
) -> Response:
    try:
        target = _login_target(ctx, provider, tenant, link, choice)
        redirect_target = safe_target(return_to)
        sid, new = ensure_browser_session(request)
        url = begin_authorization(
            ctx,
            tenant_id=target.tenant_id,
            provider_id=target.provider_id,
            browser_session=sid,
            user_ref=target.user_ref,
            redirect_target=redirect_target,
        )
    except EhrSyncError as exc:  # the service's refusals, and the EHR's own failures (down, no SMART config)
        refused = exc if link else _anonymous_refusal(exc)
        if "text/html" in request.headers.get("accept", ""):  # a patient's browser: the page, not JSON
            return render_error(request, service_error_from(refused))
        if refused is exc:
            raise
        raise refused from None
    response = _redirect(request, url, sid, new)
    if target.choice is not None:
        remember_choice(response, ctx, sid, target.choice)
    return response


def _anonymous_refusal(exc: EhrSyncError) -> EhrSyncError:
    """A login without a connect link names its tenant in the query, unauthenticated: an unknown tenant, a provider
    the tenant has not configured and one it disabled answer alike (``not_found``), so the answer never tells anyone
    which tenants exist or which providers they configured. A connect link is the tenant's own (sealed by this
    service), so its holder is told which it is."""
    disabled = isinstance(exc, ProviderUnusableError) and exc.code == "provider_disabled"
    if not (isinstance(exc, NotFoundError) or disabled):
        return exc
    logger.info("standalone login without a connect link refused (%s): answered not_found", exc.code)
    return NotFoundError(_NOT_OFFERED)


@router.get("/callback", summary="OAuth redirect target: consumes state, exchanges the code (SAL-13, SAL-39)")
def callback(
    request: Request,
    ctx: CtxDep,
    state: Annotated[str | None, Query(max_length=500)] = None,
    code: Annotated[str | None, Query(max_length=4000)] = None,
    # generous limits: an EHR's long error text is capped when shown, never refused with a 422
    error: Annotated[str | None, Query(max_length=2000)] = None,
    error_description: Annotated[str | None, Query(max_length=16000)] = None,
) -> Response:
    """The first request exchanges the code; this browser's reload of it (the state already consumed) gets
    "still connecting" while that runs, then its outcome, and never sends the code again."""
    sid = browser_session(request)
    try:
        result = complete_authorization(
            ctx, state=state, code=code, error=error, error_description=error_description, browser_session=sid
        )
    except StateRefusedError:
        replay = replay_callback(ctx, state=state, code=code, error=error, browser_session=sid)
        if replay is None:
            raise  # another browser, another callback URL, or a state nobody consumed: refused as before
        if isinstance(replay, StillConnecting):
            return _still_connecting(request)
        result = replay
    return _connected(request, ctx, result)


def _connected(request: Request, ctx: ServiceContext, result: CallbackResult) -> RedirectResponse:
    """Away from the URL with the code (SAL-39), with the cookie naming the connection this browser made."""
    response = RedirectResponse(result.redirect_target or "/connect/done", status_code=303, headers=_NO_STORE)
    sid = browser_session(request) or ""
    remember_connection(response, ctx, sid, result.connection_id)
    return response


def _still_connecting(request: Request) -> Response:
    """202 and a page that reloads itself (no JavaScript needed; each reload waits on the server a little) until
    the first request has its answer."""
    return templates.TemplateResponse(request, "connecting.html", {}, status_code=202, headers=_NO_STORE)
