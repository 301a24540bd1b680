"""SMART_ISSUER_ALLOWLIST is checked on every path that would reach an EHR, before any call (SAL-41): an EHR launch
naming a configured issuer that is not listed, an admin's connection test and a backend connection of a provider
whose FHIR base is not listed. Each test fails when that path's own check is removed (another check downstream does
not catch it: the launch's FHIR base is listed, the others would call the EHR)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.auth_service.conftest import NoNetwork
from tests.auth_service.practice import ISSUER

UNLISTED = "https://ehr.example/issuer"  # the EHR's own name for itself, not on the allow-list


@pytest.fixture
def offline(make_app: Any) -> Any:
    """An app whose outbound HTTP is recorded and fails; tenant ``t1`` bootstrapped with ``smartFhir``."""
    transport = NoNetwork()

    def make(smart: dict[str, Any], **overrides: Any) -> tuple[Any, str]:
        h = make_app(http=httpx.Client(transport=transport), **overrides)
        key = h.bootstrap("t1", {"smartFhir": {"enabled": True, "clientId": "app", **smart}})
        return h, key

    make.transport = transport  # type: ignore[attr-defined]
    return make


def test_sal41_an_ehr_launch_from_an_unlisted_issuer_is_refused_though_the_fhir_base_is_listed(offline: Any) -> None:
    """The launch's ``iss`` matches the tenant's configured issuer, whose FHIR base is listed: the issuer itself is
    not, so the launch is refused before the tenant is even looked up, and nothing is fetched."""
    h, _ = offline({"issuer": UNLISTED, "fhirBaseUrl": ISSUER})
    r = h.client.get("/api/integrations/smart/launch", params={"iss": UNLISTED, "launch": "x"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_issuer"), r.text
    assert offline.transport.calls == []


def test_sal41_the_admin_connection_test_of_an_unlisted_fhir_base_reports_it_without_a_call(offline: Any) -> None:
    h, key = offline({"issuer": ISSUER, "fhirBaseUrl": ISSUER}, SMART_ISSUER_ALLOWLIST="https://other.example/fhir")
    r = h.client.post("/api/integrations/admin/providers/smart/test", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    discovery = r.json()["discovery"]
    assert discovery["ok"] is False and discovery["error"] == "invalid_issuer", discovery
    assert offline.transport.calls == []


def test_sal41_a_backend_connection_to_an_unlisted_fhir_base_is_refused_without_a_call(offline: Any) -> None:
    h, key = offline({"issuer": ISSUER, "fhirBaseUrl": ISSUER}, SMART_ISSUER_ALLOWLIST="https://other.example/fhir")
    admin = {"Authorization": f"Bearer {key}"}
    kid = {"kid": h.settings.EHR_JWT_KEY_ID}  # private_key_jwt with the service's key, as a backend app signs
    assert h.client.put("/api/integrations/admin/providers/smart", headers=admin, json=kid).status_code == 200
    backend = {"provider": "smart", "scope": "system/Patient.rs"}
    r = h.client.post("/api/integrations/admin/backend-connections", headers=admin, json=backend)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_issuer"), r.text
    assert offline.transport.calls == []
