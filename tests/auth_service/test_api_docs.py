"""FastAPI's interactive API pages (``/docs``, ``/redoc``) are not served unless ``API_DOCS_ENABLED`` turns them on,
and then they work: the service's own content-security policy blocked their scripts, so a public ``/docs`` was a
blank page that pulled a CDN's script towards the service's origin for nothing."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

_PAGES = ("/docs", "/redoc")


def _directive(csp: str, name: str) -> list[str]:
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    return []


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_the_api_pages_are_not_served_by_default(make_app: Callable[..., Any]) -> None:
    handle = make_app()
    for path in _PAGES:
        assert handle.client.get(path, headers={"Accept": "text/html"}).status_code == 404, path
    assert "/api/integrations/smart/callback" in handle.client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("path", _PAGES)
def test_turned_on_each_page_may_load_what_it_names(make_app: Callable[..., Any], path: str) -> None:
    """Every script, stylesheet and inline script the page holds is one its content-security policy allows; the
    service's own pages keep their stricter policy."""
    handle = make_app(API_DOCS_ENABLED=True)
    page = handle.client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    scripts, styles = _directive(csp, "script-src"), _directive(csp, "style-src")
    for src in re.findall(r'<script src="([^"]+)"', page.text):
        assert _origin(src) in scripts, (src, csp)
    for link in re.findall(r"<link[^>]*>", page.text):
        if 'rel="stylesheet"' in link:
            href = re.search(r'href="([^"]+)"', link)
            assert href is not None and _origin(href.group(1)) in styles, (link, csp)
    for body in re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in scripts, csp
    assert "'unsafe-inline'" not in scripts and "frame-ancestors 'none'" in csp
    own = handle.client.get("/connect", headers={"Accept": "text/html"}).headers["Content-Security-Policy"]
    assert _directive(own, "script-src") == ["'self'"]
