"""The one place errors become HTTP: each documented code's status and the JSON contract
``{"error": code, "message": ..., **details}`` (or the HTML error page for browser routes).

Services raise ``ServiceError``s (auth_service/services/errors.py) and never see a status. Every code here has a
row in docs/TROUBLESHOOTING.md (cause, action). Messages never carry tokens, codes, secrets or PHI: connector
errors are already safe to show, OAuth descriptions are HTML-escaped when rendered.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from auth_service.services.errors import ServiceError, service_error_from
from connectors import errors as ce

__all__ = [
    "ERROR_CODES",
    "ApiError",
    "http_status",
    "install_error_handlers",
    "retry_after_header",
    "unexpected_error_response",
]

logger = logging.getLogger(__name__)

ERROR_CODES: dict[str, int] = {
    "invalid_request": 400,
    "invalid_issuer": 400,
    "ambiguous_issuer": 400,
    "invalid_redirect": 400,
    "invalid_state": 400,
    "invalid_link": 400,
    "conflicting_credentials": 400,
    "unauthorized": 401,
    "access_denied": 403,
    "scope_denied": 403,
    "not_found": 404,
    "not_connected": 404,
    "request_too_large": 413,
    "write_not_supported": 409,
    "needs_reauth": 409,
    "client_rejected": 409,
    "client_grant_refused": 409,
    "no_refresh_token": 409,
    "token_undecryptable": 409,
    "provider_disabled": 409,
    "connection_inactive": 409,
    "connection_not_syncable": 409,
    "sync_in_progress": 409,
    "bulk_not_enabled": 409,
    "connection_not_disconnected": 409,
    "connection_busy": 409,
    "idempotency_conflict": 409,
    "note_not_retryable": 409,
    "note_duplicated_in_ehr": 409,
    "confirm_not_in_ehr_required": 409,
    "validation_error": 422,
    "note_not_accepted": 422,
    "invalid_client": 502,
    "invalid_id_token": 502,
    "no_patient_context": 502,
    "invalid_grant": 502,
    "token_exchange_failed": 502,
    "authorize_invalid_request": 502,
    "unauthorized_client": 502,
    "unsupported_response_type": 502,
    "authorize_failed": 502,
    "discovery_failed": 502,
    "fhir_error": 502,
    "orchestrator_rejected": 502,
    "ehr_unavailable": 503,
    "orchestrator_unavailable": 503,
    "warehouse_busy": 503,
    "warehouse_unavailable": 503,
    "configuration_error": 409,
    "sign_in_interrupted": 500,
    "interrupted_after_connecting": 500,
    "internal_error": 500,
}


class ApiError(ServiceError, codes=("invalid_request", *ERROR_CODES)):
    """An error only the HTTP layer detects (credentials, links, redirects, the request's shape)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code, **extra)


def http_status(error: ServiceError) -> int:
    """The HTTP status of a documented code (docs/TROUBLESHOOTING.md lists both)."""
    return ERROR_CODES[error.code]


_SMART_FLOWS = "/api/integrations/smart/"
#: Starlette's and FastAPI's own HTTP errors (no route, wrong method, a body past ``BodyLimit``) by code
_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "invalid_request", 413: "request_too_large"}
#: routes a patient's browser opens: their errors are the error page when the browser asks for HTML
_PAGES = ("/connect", "/api/integrations/smart/callback")
_BROWSER_FLOWS = (*_PAGES, "/api/integrations/smart/launch", "/api/integrations/smart/login")


def retry_after_header(error: ServiceError) -> dict[str, str]:
    """``Retry-After`` for an error that says when to come back (``retryAfterSeconds``: the EHR's own Retry-After,
    the vendor's call budget, the warehouse), on the JSON answer and the error page alike; else nothing."""
    retry_after = error.details.get("retryAfterSeconds")
    if isinstance(retry_after, int) and not isinstance(retry_after, bool):
        return {"Retry-After": str(retry_after)}
    return {}


def _json(error: ServiceError) -> Response:
    body = {"error": error.code, "message": error.message, **error.details}
    headers = {"Cache-Control": "no-store", **retry_after_header(error)}
    return JSONResponse(body, status_code=http_status(error), headers=headers)


def _page(request: Request, error: ServiceError, paths: tuple[str, ...]) -> Response | None:
    """The error page for a browser (it asks for HTML) on one of ``paths``; ``None`` for API callers."""
    renderer = getattr(request.app.state, "html_error_renderer", None)
    if renderer is None or not request.url.path.startswith(paths):
        return None
    if "text/html" not in request.headers.get("accept", ""):
        return None
    response: Response = renderer(request, error)
    return response


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    """A bug reached the edge of the service: logged once with its traceback (redacted like every record), and the
    caller still gets the contract (JSON, or the error page on a patient's page), not Starlette's bare text
    "Internal Server Error". The route's template names where, never the URL (its query may hold a code)."""
    where = getattr(request.scope.get("route"), "path", "an unmatched route")
    logger.error("unexpected %s on %s %s", type(exc).__name__, request.method, where, exc_info=exc)
    error = ApiError("internal_error", "an unexpected error stopped this request; the service logged it")
    return _page(request, error, _PAGES) or _json(error)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the JSON contract (or the HTML error page for browser routes)."""

    async def on_error(request: Request, exc: Exception) -> Response:
        """Services raise ``ServiceError``s; a connector error that reaches a route gets its documented code."""
        assert isinstance(exc, ce.EhrSyncError)
        if not isinstance(exc, ServiceError):
            logger.warning("request failed: %s (%s)", type(exc).__name__, getattr(exc, "code", ""))
        error = service_error_from(exc)
        return _page(request, error, _PAGES) or _json(error)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        locations = [tuple(e.get("loc", ())) for e in exc.errors()]
        names = sorted({str(loc[1]) for loc in locations if len(loc) > 1})
        if request.url.path.startswith("/connect") and "link" in names:
            # a connect link cut short (a mail or text message breaks it at its "?") or never a link
            error = ApiError("invalid_link", "the connect link is missing or incomplete", fields=fields)
            return _page(request, error, _PAGES) or _json(error)
        if request.url.path.startswith(_SMART_FLOWS) and all(loc[:1] == ("query",) for loc in locations):
            # a launch or login URL an EHR or a link built: a bad query is the OAuth-style invalid_request (400)
            message = f"missing or malformed query parameter(s): {', '.join(names)}"
            error = ApiError("invalid_request", message, fields=fields)
            return _page(request, error, _BROWSER_FLOWS) or _json(error)
        error = ApiError("validation_error", "request is invalid", fields=fields)
        return _page(request, error, _BROWSER_FLOWS) or _json(error)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "invalid_request")
        page = _page(request, ApiError(code, str(exc.detail)), _PAGES)  # a browser on a patient page: a page
        if page is not None:
            page.status_code = exc.status_code
            page.headers.update(exc.headers or {})
            return page
        return JSONResponse(
            {"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(ce.EhrSyncError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
