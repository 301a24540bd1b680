"""The patient pages' templates and the one error page every browser-facing route shows."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from auth_service.api.errors import http_status
from auth_service.pages.error_text import plain_error
from auth_service.services.errors import ServiceError

__all__ = ["RESTART_PATH", "render_error", "templates"]

RESTART_PATH = "/connect/restart"
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))


def render_error(request: Request, error: ServiceError, *, retry: bool = True) -> Response:
    """Plain words first, then the way back into the flow, then the code for whoever helps the patient."""
    plain = plain_error(error.code)
    context = {
        "code": error.code,
        "message": error.message,
        "title": plain.title,
        "explanation": plain.explanation,
        "retry_url": RESTART_PATH if retry else None,
    }
    return templates.TemplateResponse(request, "error.html", context, status_code=http_status(error))
