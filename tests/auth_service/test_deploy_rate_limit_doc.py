"""docs/DEPLOY.md's proxy rate limit for the public sign-in entry points must cover those and nothing the host app
calls with its API key: the host app's backend calls from one address (status, refresh, test reads, disconnect),
so a per-address limit on its routes would answer it 429 once it made 30 calls a minute. A refused sign-in is
answered 429, not nginx's default 503 (the service down, to a patient and to an uptime check)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from auth_service.api.deps import get_admin

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md"
#: ``location [modifier] path { limit_req ...`` in the doc's nginx example
_LIMITED = re.compile(r"location\s+(=|~\*?|\^~)?\s*(\S+)\s*\{\s*limit_req\b")
#: the doc's nginx example: one file for ``/etc/nginx/conf.d/`` (tests/deploy/test_nginx_example.py runs nginx -t on it)
_EXAMPLE = re.compile(r"```nginx\n(.*?)```", re.DOTALL)


def _limited_locations() -> list[tuple[str, str]]:
    found = [(m.group(1) or "", m.group(2)) for m in _LIMITED.finditer(DEPLOY.read_text(encoding="utf-8"))]
    assert found, "docs/DEPLOY.md shows no rate-limited location"
    return found


def _matches(modifier: str, pattern: str, path: str) -> bool:
    """Whether nginx's ``location`` (prefix, ``=`` exact, ``~``/``~*`` regex, ``^~`` prefix) takes ``path``."""
    if modifier == "=":
        return path == pattern
    if modifier.startswith("~"):
        return re.search(pattern, path, re.IGNORECASE if modifier == "~*" else 0) is not None
    return path.startswith(pattern)


def _needs(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _needs(dep)


def _routes(routes: Sequence[Any]) -> Iterator[APIRoute]:
    """Every API route, through included routers (their own routes carry their prefix; the app adds none)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's wrapper of an included router
        if included is not None:
            yield from _routes(included.routes)


def _paths(make_app: Any) -> tuple[set[str], set[str]]:
    """The app's route paths (parameters filled in), split into those needing an API key and the others."""
    admin: set[str] = set()
    public: set[str] = set()
    for route in _routes(make_app().app.routes):
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        (admin if get_admin in set(_needs(route.dependant)) else public).add(path)
    return admin, public


def test_the_documented_sign_in_rate_limit_spares_the_host_apps_api_key_routes(make_app) -> None:
    admin, public = _paths(make_app)
    locations = _limited_locations()
    assert "/api/integrations/smart/status" in admin and "/api/integrations/smart/refresh" in admin
    limited_admin = sorted(p for p in admin if any(_matches(m, loc, p) for m, loc in locations))
    assert limited_admin == [], f"the doc's per-address sign-in limit also throttles the host app: {limited_admin}"
    for entry in ("/connect", "/api/integrations/smart/login", "/api/integrations/smart/launch"):
        assert entry in public and any(_matches(m, loc, entry) for m, loc in locations), entry


def test_the_documented_limit_answers_429_not_nginxs_default_503() -> None:
    """nginx refuses a request over ``limit_req`` with 503 unless ``limit_req_status`` says otherwise: the example
    sets 429 in its ``server {}``, which every limited location inherits, and defines the zone those use at the
    file's top level (the ``http`` context of a ``conf.d`` file, the only one ``limit_req_zone`` is allowed in)."""
    (example,) = _EXAMPLE.findall(DEPLOY.read_text(encoding="utf-8"))
    top, server = example.split("server {", 1)
    assert re.findall(r"^\s*limit_req_status (\d+);", server, re.MULTILINE) == ["429"], server
    assert "limit_req_status" not in top and "limit_req_zone" not in server
    zones = re.findall(r"^limit_req_zone \S+ zone=(\w+):", top, re.MULTILINE)
    used = set(re.findall(r"limit_req zone=(\w+)", server))
    assert used and used == set(zones), (used, zones)
