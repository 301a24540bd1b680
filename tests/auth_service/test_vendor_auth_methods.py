"""A vendor plugin's ``auth_methods`` bind (vendors.md §8): eCW signs its assertions with RS384 only (§4), an
Epic backend client authenticates with a signed JWT, never a shared secret (§1, §2). A provider config asking
for anything else is refused when it is stored, when its profile is resolved and before any token request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from auth_service.core.config import Settings
from auth_service.services.context import build_context
from auth_service.services.profiles import ClientProfile, resolve_profile
from auth_service.services.tenants import upsert_tenant
from auth_service.tenants.settings import TenantSeed
from connectors.errors import AuthMethodNotAllowedError
from tests.auth_service.conftest import AppHandle
from tests.auth_service.keyutil import ec_pem, rsa_pem

ECW = {"fhirBaseUrl": "https://fhir4.eclinicalworks.com", "clientId": "c", "practiceCode": "ABCD12"}
EPIC = {"fhirBaseUrl": "https://fhir.epic.example/api/FHIR/R4", "clientId": "epic-app"}


def _profile(make_settings: Callable[..., Settings], provider_id: str, config: dict[str, Any], **env: Any) -> Any:
    practice = {"ehrIntegrations": {"enabledProviders": [provider_id], "providerConfigs": {provider_id: config}}}
    settings = make_settings(**env)
    ctx = build_context(settings)
    try:
        with ctx.db.session() as s, s.begin():
            upsert_tenant(
                s, TenantSeed.model_validate({"id": "c1", "name": "C", "practice_settings": practice}), ctx.cipher
            )
            return settings, resolve_profile(s, ctx.cipher, settings, "c1", provider_id)
    finally:
        ctx.close()


def test_ecw_with_an_ec_service_key_is_refused_naming_vendor_alg_and_the_allowed_ones(make_settings) -> None:
    """The service key is EC (ES384); eCW takes RS384 assertions only, so the profile is refused instead of
    signing ES384 assertions eCW would reject."""
    with pytest.raises(AuthMethodNotAllowedError) as caught:
        _profile(make_settings, "ecw", {**ECW, "kid": "svc"}, EHR_JWT_PRIVATE_KEY=ec_pem(), EHR_JWT_KEY_ID="svc")
    message = caught.value.message
    assert "eClinicalWorks" in message and "private_key_jwt ES384" in message
    assert "allowed: " in message and "private_key_jwt RS384" in message


def test_ecw_config_with_its_own_ec_key_and_no_alg_is_refused_as_es384(make_settings) -> None:
    """A config's own EC key with no ``signing_alg`` signs ES384 (the alg the key is for), so eCW refuses it when
    the profile is resolved, naming ES384, instead of passing as RS384 and failing at the first token request."""
    with pytest.raises(AuthMethodNotAllowedError, match=r"eClinicalWorks \(ecw\).*private_key_jwt ES384"):
        _profile(make_settings, "ecw", {**ECW, "kid": "own", "privateKey": ec_pem()})


def test_ecw_with_a_client_secret_is_refused(make_settings) -> None:
    with pytest.raises(AuthMethodNotAllowedError, match=r"eClinicalWorks \(ecw\) does not accept client auth "):
        _profile(make_settings, "ecw", {**ECW, "clientSecret": "s"})


def test_epic_secret_is_kept_for_patient_flows_but_refused_for_client_credentials(make_settings) -> None:
    """vendors.md §2: a user-facing confidential Epic app may use a secret; a backend app needs a signed JWT."""
    settings, profile = _profile(make_settings, "epic", {**EPIC, "clientSecret": "s"})
    assert isinstance(profile, ClientProfile)
    assert profile.client_auth(settings, "authorization_code").method == "client_secret_basic"
    with pytest.raises(AuthMethodNotAllowedError) as caught:
        profile.client_auth(settings, "client_credentials")
    assert (
        "Epic (epic)" in caught.value.message and "client_secret_basic for client_credentials" in caught.value.message
    )
    assert "private_key_jwt RS384/ES384 (client_credentials)" in caught.value.message


def _refusing_transport(calls: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(503)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_epic_backend_connection_with_a_secret_is_refused_before_any_ehr_call(
    make_app: Callable[..., AppHandle],
) -> None:
    calls: list[str] = []
    h = make_app(http=_refusing_transport(calls), SMART_ISSUER_ALLOWLIST=EPIC["fhirBaseUrl"])
    config = {**EPIC, "clientSecret": "s"}
    key = h.bootstrap("t1", {"ehrIntegrations": {"enabledProviders": ["epic"], "providerConfigs": {"epic": config}}})
    body = {"provider": "epic", "scope": "system/Patient.read", "group_id": "g-1"}
    r = h.client.post(
        "/api/integrations/admin/backend-connections", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code >= 400 and r.json()["error"] == "configuration_error", r.text
    assert "client_secret_basic" in r.json()["message"] and "private_key_jwt" in r.json()["message"]
    assert calls == []


@pytest.mark.parametrize(
    ("service_key", "extra", "refused"),
    [(None, {"clientSecret": "s"}, "client_secret_basic"), ("ec", {"kid": "svc"}, "private_key_jwt ES384")],
)
def test_admin_put_refuses_an_ecw_config_outside_its_auth_methods(
    make_app: Callable[..., AppHandle], service_key: str | None, extra: dict[str, Any], refused: str
) -> None:
    """PUT checks the method the config asks for and, for a JWT, the alg it would sign with (the service key's
    when the config brings none): 422 naming vendor, choice and the allowed methods; its own RSA key is accepted
    and signs RS384."""
    env = {"EHR_JWT_PRIVATE_KEY": ec_pem(), "EHR_JWT_KEY_ID": "svc"} if service_key == "ec" else {}
    h = make_app(**env)
    key = h.bootstrap("t1")
    headers = {"Authorization": f"Bearer {key}"}
    r = h.client.put("/api/integrations/admin/providers/ecw", headers=headers, json={**ECW, **extra})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    message = r.json()["fields"][0]["message"]
    assert "eClinicalWorks" in message and refused in message and "private_key_jwt RS384" in message
    rsa = {**ECW, "kid": "k1", "privateKey": rsa_pem()}
    assert h.client.put("/api/integrations/admin/providers/ecw", headers=headers, json=rsa).status_code == 200
    assert h.client.post("/api/integrations/admin/providers/ecw/enable", headers=headers).json()["enabled"]
    ctx = h.app.state.ctx
    with ctx.db.session() as s:
        profile = resolve_profile(s, ctx.cipher, h.settings, "t1", "ecw")
    auth = profile.client_auth(h.settings, "client_credentials")
    assert (auth.method, auth.alg) == ("private_key_jwt", "RS384")
