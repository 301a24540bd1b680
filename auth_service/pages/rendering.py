"""The patient pages' templates and the one error page every browser-facing route shows."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from auth_service.api.connect_cookies import LINK_COOKIE
from auth_service.api.errors import http_status, retry_after_header
from auth_service.core.links import InvalidLinkError
from auth_service.pages.error_text import RESTART_ELSEWHERE, plain_error
from auth_service.services.errors import ServiceError

__all__ = ["RESTART_PATH", "render_error", "templates"]

RESTART_PATH = "/connect/restart"
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def _can_restart(request: Request) -> bool:
    """ "Try again" restarts from the connect link this browser opened: an EHR launch (or a login without a
    link) has none, and a "Try again" there would only lead to "this connect link has expired"."""
    try:
        request.app.state.ctx.links.verify(request.cookies.get(LINK_COOKIE) or "")
    except InvalidLinkError:
        return False
    return True


def render_error(request: Request, error: ServiceError, *, retry: bool = True) -> Response:
    """Plain words first, then the way back into the flow (when there is one), then the code for support."""
    plain = plain_error(error.code, state_ttl_seconds=request.app.state.ctx.settings.OAUTH_STATE_TTL_SECONDS)
    retry_url = RESTART_PATH if retry and plain.retry and _can_restart(request) else None
    context = {
        "code": error.code,
        "message": error.message,
        "title": plain.title,
        "explanation": plain.explanation,
        "retry_url": retry_url,
        # a page whose words invite another try but that has no "Try again" to offer says where to start again
        "restart_hint": RESTART_ELSEWHERE if retry_url is None and plain.retry and not plain.says_how else None,
    }
    headers = retry_after_header(error)  # a 503 that knows when the EHR (or its call budget) takes calls again
    return templates.TemplateResponse(request, "error.html", context, status_code=http_status(error), headers=headers)
