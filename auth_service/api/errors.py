"""The JSON error contract ``{"error": code, "message": ...}`` and the mapping from typed connector errors.

Every code here has a row in docs/TROUBLESHOOTING.md (cause, action). Messages never carry tokens, codes,
secrets or PHI: connector errors are already safe to show, OAuth descriptions are HTML-escaped when rendered.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors import errors as ce

__all__ = ["ERROR_CODES", "ApiError", "api_error_from", "install_error_handlers"]

logger = logging.getLogger(__name__)

ERROR_CODES: dict[str, int] = {
    "invalid_request": 400,
    "invalid_issuer": 400,
    "invalid_redirect": 400,
    "invalid_state": 400,
    "invalid_link": 400,
    "conflicting_credentials": 400,
    "unauthorized": 401,
    "access_denied": 403,
    "scope_denied": 403,
    "not_found": 404,
    "not_connected": 404,
    "write_not_supported": 409,
    "needs_reauth": 409,
    "client_rejected": 409,
    "token_undecryptable": 409,
    "provider_disabled": 409,
    "connection_inactive": 409,
    "sync_in_progress": 409,
    "bulk_not_enabled": 409,
    "validation_error": 422,
    "invalid_client": 502,
    "invalid_id_token": 502,
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
    "configuration_error": 409,
}


class ApiError(Exception):
    """An error the API reports as ``{"error": code, "message": ...}`` with the code's HTTP status."""

    def __init__(self, code: str, message: str, *, status: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        if code not in ERROR_CODES:
            raise ValueError(f"unknown API error code {code!r}")
        self.code = code
        self.message = message
        self.status = status or ERROR_CODES[code]
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def api_error_from(exc: ce.EhrSyncError, *, tenant: str | None = None, vendor: str | None = None) -> ApiError:
    """Translate a connector error into its API code (one code per troubleshooting row)."""
    if isinstance(exc, ce.WriteNotSupportedError):
        return ApiError(
            "write_not_supported",
            str(exc),
            code_upper="WRITE_NOT_SUPPORTED",
            reason=exc.reason,
            tenant=tenant,
            vendor=vendor,
        )
    if exc.code == "invalid_id_token":
        return ApiError("invalid_id_token", str(exc))
    if isinstance(exc, ce.SecurityPolicyError):
        return ApiError("invalid_issuer", str(exc))
    if isinstance(exc, ce.DiscoveryError):
        return ApiError("discovery_failed", str(exc))
    if exc.code in ("client_rejected", "token_undecryptable"):  # NeedsReauthError kinds an admin must fix
        return ApiError(exc.code, str(exc))
    if isinstance(exc, ce.NeedsReauthError):
        return ApiError("needs_reauth", str(exc))
    if isinstance(exc, ce.AccessDeniedError):
        return ApiError("access_denied", "access not granted at the EHR")
    if isinstance(exc, ce.InvalidClientError):
        return ApiError("invalid_client", str(exc))
    if isinstance(exc, ce.InvalidScopeError):
        return ApiError("scope_denied", str(exc))
    if isinstance(exc, ce.InvalidGrantError):
        return ApiError("invalid_grant", str(exc))
    if isinstance(exc, ce.TemporarilyUnavailableError | ce.TransportError):
        return ApiError("ehr_unavailable", str(exc))
    if isinstance(exc, ce.OAuthError):
        return ApiError("token_exchange_failed", str(exc))
    if isinstance(exc, ce.FhirForbiddenError):
        return ApiError("scope_denied", str(exc))
    if isinstance(exc, ce.FhirUnauthorizedError):
        return ApiError("needs_reauth", str(exc))
    if isinstance(exc, ce.FhirError):
        if exc.is_transient:
            return ApiError("ehr_unavailable", str(exc))
        return ApiError("fhir_error", str(exc), upstream_status=exc.status)
    if isinstance(exc, ce.ConfigurationError):
        return ApiError("configuration_error", str(exc))
    return ApiError("fhir_error", str(exc))


def _json(error: ApiError) -> Response:
    body = error.body()
    if "code_upper" in body:  # DWB-42 asks for a "code" field next to our "error"
        body["code"] = body.pop("code_upper")
    return JSONResponse(body, status_code=error.status, headers={"Cache-Control": "no-store"})


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the JSON contract (or the HTML error page for browser routes)."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        renderer = getattr(request.app.state, "html_error_renderer", None)
        if renderer is not None and request.url.path.startswith(("/connect", "/api/integrations/smart/callback")):
            accept = request.headers.get("accept", "")
            if "text/html" in accept:
                response: Response = renderer(request, exc)
                return response
        return _json(exc)

    async def on_ehr_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ce.EhrSyncError)
        logger.warning("request failed: %s (%s)", type(exc).__name__, getattr(exc, "code", ""))
        return await on_api_error(request, api_error_from(exc))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return _json(ApiError("validation_error", "request is invalid", fields=fields))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {401: "unauthorized", 404: "not_found", 405: "invalid_request"}.get(exc.status_code, "invalid_request")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ce.EhrSyncError, on_ehr_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
