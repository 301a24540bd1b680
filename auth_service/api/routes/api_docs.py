"""FastAPI's interactive API pages, ``/docs`` (Swagger UI) and ``/redoc``, served only when ``API_DOCS_ENABLED``.

Off by default, as the FastAPI full-stack template keeps them outside local development: they load their scripts
from a CDN (cdn.jsdelivr.net) into the service's own origin, where patients' cookies live and an operator types an
admin API key. Turned on, each page gets a content-security policy that lets exactly its own sources load (the
service's pages keep theirs: ``script-src 'self'``); ``/openapi.json`` is served either way (no script).
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

__all__ = ["install_api_docs"]

_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _policy(page: bytes) -> str:
    """The page's CDN and its inline script (by hash, never ``'unsafe-inline'``); ReDoc's fonts and search worker."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'none'; script-src 'self' {_CDN} {hashes}".rstrip()
        + f"; style-src 'unsafe-inline' {_CDN} https://fonts.googleapis.com; font-src https://fonts.gstatic.com; "
        "img-src 'self' data: https:; connect-src 'self'; worker-src blob:; base-uri 'none'; frame-ancestors 'none'"
    )


def _page(html: HTMLResponse) -> tuple[bytes, dict[str, str]]:
    body = bytes(html.body)
    return body, {"Content-Security-Policy": _policy(body)}


def install_api_docs(app: FastAPI) -> None:
    """Add ``/docs`` and ``/redoc`` (left out of the OpenAPI document, as FastAPI's own are)."""
    spec, title = app.openapi_url or "/openapi.json", f"{app.title} - API"
    swagger = _page(get_swagger_ui_html(openapi_url=spec, title=title))
    redoc = _page(get_redoc_html(openapi_url=spec, title=title))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(swagger[0], headers=swagger[1])

    @app.get("/redoc", include_in_schema=False)
    def redoc_page() -> HTMLResponse:
        return HTMLResponse(redoc[0], headers=redoc[1])
