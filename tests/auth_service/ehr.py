"""Helpers to run the auth service against the sandbox EHR (its documented /admin HTTP API)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from auth_service.app import create_app
from auth_service.core.keys import build_jwks
from auth_service.services.tenants import bootstrap_tenant
from auth_service.tenants.settings import TenantSeed
from connectors.transport.tls import default_ssl_context
from tests.auth_service.conftest import LiveServer

CALLBACK = "/api/integrations/smart/callback"


def sandbox_admin(sandbox: Any, path: str, payload: dict[str, Any] | None = None, method: str = "POST") -> Any:
    r = httpx.request(
        method, f"{sandbox.base_url}/admin/{path}", json=payload, timeout=10, verify=default_ssl_context()
    )
    assert r.status_code < 300, f"sandbox admin {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def patient_ids(sandbox: Any) -> list[str]:
    body = sandbox_admin(sandbox, "patients", method="GET")
    ids = body.get("patients", body) if isinstance(body, dict) else body
    return [str(p if isinstance(p, str) else p["id"]) for p in ids]


@dataclass
class Service:
    """A live auth service for one test: base URL, app (for its context) and the tenant's API key."""

    server: LiveServer
    api_key: str
    tenant_id: str
    seen: dict[str, str] = field(default_factory=dict)  # secrets observed on the wire, for SAL-38 greps

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def ctx(self) -> Any:
        return self.server.app.state.ctx

    @property
    def redirect_uri(self) -> str:
        return self.base_url + CALLBACK

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            self.base_url + path,
            headers={"X-API-Key": self.api_key},
            timeout=30,
            **kwargs,
            verify=default_ssl_context(),
        )

    def jwks(self) -> dict[str, Any]:
        return build_jwks(self.ctx.settings.signing_key(), [])


@contextmanager
def running_service(make_settings: Any, sandbox: Any, practice: dict[str, Any], **overrides: Any) -> Iterator[Service]:
    def factory(base_url: str) -> Any:
        values = {"SMART_ISSUER_ALLOWLIST": sandbox.fhir_base, **overrides}
        settings = make_settings(APP_BASE_URL=base_url, **values)
        return create_app(settings)

    with LiveServer(factory) as server:
        ctx = server.app.state.ctx
        seed = TenantSeed.model_validate({"id": "t1", "name": "Clinic One", "practice_settings": practice})
        with ctx.db.session() as session, session.begin():
            key = bootstrap_tenant(session, seed, ctx.cipher).api_key
        yield Service(server, key, "t1")


def smart_practice(sandbox: Any, client_id: str, **flags: Any) -> dict[str, Any]:
    return {
        "smartFhir": {
            "enabled": True,
            "issuer": sandbox.fhir_base,
            "fhirBaseUrl": sandbox.fhir_base,
            "clientId": client_id,
            **flags,
        }
    }


def authorize_headless(service: Service, start_url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """Follow the redirects of a pre-approved authorization by hand, recording code and state (SAL-38)."""
    with httpx.Client(timeout=30, follow_redirects=False, headers=headers) as browser:
        r = browser.get(start_url)
        assert r.status_code == 302, r.text
        authorize_url = r.headers["location"]
        service.seen["state"] = parse_qs(urlsplit(authorize_url).query)["state"][0]
        r = browser.get(authorize_url)
        assert r.status_code in (302, 303), f"sandbox did not redirect: {r.status_code} {r.text[:300]}"
        callback_url = r.headers["location"]
        assert callback_url.startswith(service.redirect_uri), callback_url
        query = parse_qs(urlsplit(callback_url).query)
        if "code" in query:
            service.seen["code"] = query["code"][0]
        return browser.get(callback_url)
