"""Oracle Health takes no wildcard scope (vendors.md §3 [doc]) in the spelling it is really asked: a v1-only EHR is
asked ``system/Observation.cruds`` as ``system/Observation.*`` (SAL-20)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.auth_service.conftest import AppHandle
from tests.auth_service.test_vendor_backend import CERNER, ORACLE_BASE, ORACLE_V1_BACKEND_CONFIG


def test_an_oracle_scope_a_v1_only_ehr_would_be_asked_as_a_wildcard_is_refused_before_the_token_call(
    make_app: Callable[..., AppHandle],
) -> None:
    """``system/Observation.cruds`` is no wildcard as given, but a v1-only Oracle Health server is asked it as
    ``system/Observation.*``, which it refuses; the connection is refused (400 naming both spellings) after
    discovery and before the grant. Before, the set-up check read only the given spelling, so the grant was sent with
    ``system/Observation.*`` and the EHR's refusal reported as an app-registration problem."""
    base, config = ORACLE_BASE, dict(ORACLE_V1_BACKEND_CONFIG)
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/smart-configuration"):
            return httpx.Response(200, json=config)
        if request.url.path == "/token":
            tokens.append(request.content.decode())
            return httpx.Response(400, json={"error": "invalid_scope"})
        return httpx.Response(404)

    h = make_app(http=httpx.Client(transport=httpx.MockTransport(handler)), SMART_ISSUER_ALLOWLIST=base)
    practice = {"ehrIntegrations": {"enabledProviders": ["cerner"], "providerConfigs": {"cerner": CERNER}}}
    headers = {"Authorization": f"Bearer {h.bootstrap('t1', practice)}"}
    body = {"provider": "cerner", "scope": "system/Patient.read system/Observation.cruds", "group_id": "g-1"}
    r = h.client.post("/api/integrations/admin/backend-connections", json=body, headers=headers)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert r.json()["error"] == "invalid_request" and "system/Observation.*" in message, message
    assert "system/Observation.cruds" in message, message
    assert tokens == []
    events = h.client.get("/api/integrations/admin/audit", headers=headers).json()
    refused = next(e for e in events if e["action"] == "backend.create")
    assert refused["outcome"] == "failure" and refused["detail"]["error_code"] == "invalid_request"
