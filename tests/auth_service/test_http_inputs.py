"""Every route the app registers, sent hostile input in each of its inputs (path, query, JSON or form field,
a repeated parameter, a malformed or wrong-shaped body): the answer is a 4xx that says what is wrong, never a
500 or a traceback, on SQLite and on PostgreSQL (which refuses NUL in text where SQLite does not)."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.routing import BaseRoute

from tests.auth_service.conftest import NoNetwork
from tests.auth_service.practice import SMART

#: NUL (PostgreSQL text refuses it), a lone surrogate (no UTF-8 for it), oversized, markup (echo must escape)
HOSTILE = ["a\x00b", "\ud800", "x" * 20_000, "<script>alert(1)</script>"]
#: a value of the right shape for each field name, so the hostile value in one field is what gets checked
VALID: dict[str, Any] = {
    "connectionId": "c1",
    "connection_id": "c1",
    "idempotencyKey": "key-00001",
    "title": "t",
    "producedBy": "p",
    "text": "x",
    "user_ref": "u",
    "provider": "smart",
    "scope": "system/*.rs",
    "data_retention_days": 30,
    "csrf": "c",
    "confirm": "yes",
}
_UPSTREAM = {502: {"discovery_failed", "ehr_unavailable"}, 503: {"ehr_unavailable", "orchestrator_unavailable"}}


def _walk(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _walk(inner.routes) if inner is not None else [route]


def _body_fields(route: APIRoute) -> tuple[str, list[str]]:
    """``json`` or ``form``, and the field names of the route's body."""
    params = route.dependant.body_params
    if params and type(params[0].field_info).__name__ == "Form":
        return "form", [p.name for p in params]
    names: list[str] = []
    for param in params:
        for kind in (param.field_info.annotation, *typing.get_args(param.field_info.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names += list(kind.model_fields)
    if route.path.endswith("/providers/{provider_id}") and "PUT" in route.methods:
        names = ["clientId", "fhirBaseUrl", "issuer"]
    return "json", names


def _query_names(route: APIRoute) -> list[str]:
    extra = (route.openapi_extra or {}).get("parameters", [])
    return [p.name for p in route.dependant.query_params] + [p["name"] for p in extra if p.get("in") == "query"]


def _enc(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _requests(route: APIRoute, value: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, url, request kwargs): the value in each input of the route in turn, plus shapeless bodies."""
    path_names = re.findall(r"\{([^}]+)\}", route.path)
    base_path = re.sub(r"\{[^}]+\}", "p1", route.path)
    queries = _query_names(route)
    kind, fields = _body_fields(route)
    for method in sorted(route.methods):
        for name in path_names:
            yield method, route.path.replace("{" + name + "}", _enc(value)).replace("{", "").replace("}", ""), {}
        for name in queries:
            # the parameter twice, the hostile value last (the one a framework keeps)
            yield method, f"{base_path}?{name}=ok&{name}={_enc(value)}", {}
        for name in fields:
            body = {**{f: VALID.get(f, "v1") for f in fields}, name: value}
            if kind == "form":
                content = "&".join(f"{k}={_enc(str(v))}" for k, v in body.items())
                yield method, base_path, {"content": content, "ctype": "application/x-www-form-urlencoded"}
            else:
                yield method, base_path, {"content": json.dumps(body), "ctype": "application/json"}
        if method in ("POST", "PUT") and value == HOSTILE[0]:  # the value plays no part: sent once per route
            yield method, base_path, {"content": '{"not json', "ctype": "application/json"}
            yield method, base_path, {"content": "[1, 2]", "ctype": "application/json"}
            yield method, base_path, {"content": "[" * 100_000 + "]" * 100_000, "ctype": "application/json"}


def _check(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if response.headers.get("content-type", "").startswith("text/html"):
        assert status < 500, what
        assert "<script>alert(1)" not in response.text, f"{what}: markup echoed unescaped"
        return
    if status in _UPSTREAM and response.json().get("error") in _UPSTREAM[status]:
        return  # the EHR or Dagster is unreachable in this test: their documented answers
    assert status < 500, f"{what}: {status} {response.text[:300]}"
    if status >= 400:
        body = response.json()
        assert body.get("error") and body.get("message"), f"{what}: {body}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app_db(request: pytest.FixtureRequest, make_app: Any) -> Any:
    overrides = {"DATABASE_URL": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    return make_app(
        http=httpx.Client(transport=NoNetwork()), DAGSTER_GRAPHQL_URL="http://127.0.0.1:9/graphql", **overrides
    )


def test_hostile_input_in_any_route_is_a_clear_4xx(app_db: Any) -> None:
    api_key = app_db.bootstrap("t1", SMART)
    routes = [r for r in _walk(app_db.app.routes) if isinstance(r, APIRoute)]
    assert len(routes) >= 40 and any(r.path == "/connect/disconnect" for r in routes)
    client = TestClient(app_db.app, raise_server_exceptions=False, follow_redirects=False)
    client.cookies.set("ehrsync_sid", "s" * 43)
    sent, failures = 0, []
    for route in routes:
        for value in HOSTILE:
            for method, url, kwargs in _requests(route, value):
                headers = {"X-API-Key": api_key, "Accept": "text/html, application/json"}
                if "ctype" in kwargs:
                    headers["Content-Type"] = kwargs.pop("ctype")
                response = client.request(method, url, headers=headers, **kwargs)
                try:
                    _check(response, f"{method} {url[:120]} {kwargs.get('content', '')[:80]!r}")
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0])
                sent += 1
    assert failures == [], "\n".join(failures)
    assert sent > 300


def test_a_nul_in_a_connection_id_names_the_field(app_db: Any) -> None:
    """PostgreSQL refuses NUL in text: the admin API refuses it first, naming the parameter."""
    headers = {"X-API-Key": app_db.bootstrap("t1", SMART)}
    r = app_db.client.get("/api/integrations/smart/status?connection_id=c%001", headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert "connection_id" in r.json()["message"] and r.json()["fields"][0]["field"] == "query.connection_id"
    r = app_db.client.post("/api/integrations/smart/disconnect", headers=headers, json={"connection_id": "c\x001"})
    assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["body.connection_id"]
    r = app_db.client.get("/api/integrations/smart/status?connection_id=", headers=headers)
    assert r.status_code == 404 and r.json()["error"] == "not_connected"  # empty: the newest, still
