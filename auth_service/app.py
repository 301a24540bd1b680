"""``create_app(settings)``: the FastAPI application of the SMART auth service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response

from auth_service.api.body_limit import BodyLimit
from auth_service.api.errors import install_error_handlers, unexpected_error_response
from auth_service.api.routes import (
    admin,
    brands_admin,
    connect_pages,
    ehr_notes,
    ehr_resources,
    ehr_sync,
    jwks,
    pages,
    smart_flows,
)
from auth_service.api.routes.api_docs import install_api_docs
from auth_service.core.config import Settings
from auth_service.core.keys import build_jwks
from auth_service.core.redaction import install_redaction
from auth_service.services.context import ServiceContext, build_context
from auth_service.services.dagster_client import DagsterGraphQLClient

__all__ = ["create_app"]

logger = logging.getLogger(__name__)
# Scripts and fetches only from this service (the connect page's search); logos of brands are https or inline.
_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' data: https:; base-uri 'none'; frame-ancestors 'none'"
)


async def _security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """No caching and no referrer by default (SAL-39 for the callback); pages get a strict CSP; a service on
    https keeps browsers on https (HSTS: the patient's first visit by plain http cannot be downgraded again).
    An unexpected exception (a bug) becomes the documented ``internal_error`` here, so it gets these headers too."""
    try:
        response = await call_next(request)
    except Exception as exc:
        response = unexpected_error_response(request, exc)
    if request.app.state.ctx.settings.APP_BASE_URL.startswith("https://"):
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def create_app(
    settings: Settings, *, http: httpx.Client | None = None, context: ServiceContext | None = None
) -> FastAPI:
    """Build the app; the database is migrated and the keys loaded now, so bad config fails at start."""
    if settings.LOG_REDACTION_ENABLED:
        install_redaction()
    ctx = context or build_context(settings, http=http)
    dagster = DagsterGraphQLClient(settings.DAGSTER_GRAPHQL_URL)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        dagster.close()
        if context is None:
            ctx.close()

    app = FastAPI(
        title="ehrsync auth service",
        version="0.1.0",
        description="SMART App Launch client, admin API and patient pages. Errors: docs/TROUBLESHOOTING.md.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc only when API_DOCS_ENABLED (auth_service.api.routes.api_docs)
        redoc_url=None,
    )
    if settings.API_DOCS_ENABLED:
        install_api_docs(app)
    app.state.ctx = ctx
    app.state.dagster = dagster
    app.state.jwks = build_jwks(settings.signing_key(), settings.previous_public_keys())
    app.state.html_error_renderer = pages.render_error
    install_error_handlers(app)
    app.add_middleware(BodyLimit)  # every body bounded: FastAPI reads it whole before the API key is checked
    app.middleware("http")(_security_headers)
    for router in (smart_flows.router, admin.router, ehr_sync.router, ehr_resources.router, jwks.router, pages.router):
        app.include_router(router)
    app.include_router(connect_pages.router)
    app.include_router(brands_admin.router)
    app.include_router(ehr_notes.router)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
