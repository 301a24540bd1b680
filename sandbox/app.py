"""``create_app(cfg)``: the sandbox as one FastAPI app, wrapped in the fault middleware."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox import admin
from sandbox.bulk import routes as bulk_routes
from sandbox.config import SandboxConfig
from sandbox.faults import FaultMiddleware
from sandbox.fhir import create_answers, discovery, provenance_search
from sandbox.fhir import routes as fhir_routes
from sandbox.fhir.responses import FhirFailure, failure_response, fhir_response, outcome_body
from sandbox.oauth import routes as oauth_routes
from sandbox.state import SandboxState

log = logging.getLogger(__name__)


def create_app(cfg: SandboxConfig | None = None) -> FastAPI:
    """A fresh sandbox (its own data overlay, clients and tokens); ``app.state.sandbox`` holds the state."""
    cfg = cfg or SandboxConfig()
    app = FastAPI(title="ehrsync sandbox EHR", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.sandbox = SandboxState(cfg)
    # Order matters: fixed paths (discovery, $export) before the generic /fhir/{type}/{id} routes.
    app.include_router(discovery.router)
    app.include_router(bulk_routes.router)
    app.include_router(oauth_routes.router)
    app.include_router(admin.router)
    app.include_router(create_answers.router)  # /fhir/_async/{job} before /fhir/{type}/{id}
    app.include_router(provenance_search.router)  # GET /fhir/Provenance before /fhir/{type}
    app.include_router(fhir_routes.router)

    @app.exception_handler(FhirFailure)
    async def _fhir_failure(request: Request, exc: FhirFailure) -> Response:
        return failure_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/admin"):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        return fhir_response(outcome_body("invalid", "request is malformed"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/fhir") or request.url.path.startswith("/bulk"):
            return fhir_response(outcome_body("processing", str(exc.detail)), exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return fhir_response(outcome_body("exception", "internal server error"), 500)

    app.add_middleware(FaultMiddleware, registry=app.state.sandbox.faults, clock=app.state.sandbox.clock)
    return app


def state_of(app: FastAPI) -> SandboxState:
    state: SandboxState = app.state.sandbox
    return state
