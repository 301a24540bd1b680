"""SAL-05: the launch checks the signing alg the client will really sign with against the server's advertised
``token_endpoint_auth_signing_alg_values_supported``, not the service key's alg.

A provider config may carry its own private key (an RSA key registered with an RS384-only EHR) while the
service key (EHR_JWT_PRIVATE_KEY) is EC. The launch used to check the service key's ES384 and refuse the
connection although every assertion of that client is signed RS384 with its own key.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.keyutil import ec_pem, rsa_pem
from tests.auth_service.test_flows_sandbox import connect, register


def _public_jwks(private_pem: str, kid: str) -> dict[str, Any]:
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))  # type: ignore[arg-type]
    return {"keys": [{**jwk, "kid": kid, "alg": "RS384", "use": "sig"}]}


def test_sal05_own_rsa_key_connects_to_an_rs384_only_server_despite_an_ec_service_key(make_settings, sandbox) -> None:
    sandbox_admin(sandbox, "settings", {"assertion_algs": ["RS384"]})
    pid = patient_ids(sandbox)[0]
    own = rsa_pem()
    service_key = {"EHR_JWT_PRIVATE_KEY": ec_pem(), "EHR_JWT_KEY_ID": "svc-ec"}
    with running_service(make_settings, sandbox, smart_practice(sandbox, "own-key-app"), **service_key) as svc:
        register(sandbox, svc, "own-key-app", "confidential-asymmetric", jwks=_public_jwks(own, "own-kid"))
        put = svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": "own-kid", "privateKey": own})
        assert put.status_code == 200, put.text
        conn_id = connect(sandbox, svc, "own-key-app", pid)
        refreshed = svc.admin("POST", "/api/integrations/smart/refresh", json={"connection_id": conn_id})
        assert refreshed.status_code == 200, refreshed.text


def test_sal05_service_key_alg_the_server_does_not_advertise_is_refused_before_the_redirect(
    make_settings, sandbox
) -> None:
    """The other way round still holds: the EC service key signs ES384, which an RS384-only server does not
    list, so the launch is refused at setup naming the alg (never a redirect that fails after the login)."""
    sandbox_admin(sandbox, "settings", {"assertion_algs": ["RS384"]})
    service_key = {"EHR_JWT_PRIVATE_KEY": ec_pem(), "EHR_JWT_KEY_ID": "svc-ec"}
    with running_service(make_settings, sandbox, smart_practice(sandbox, "svc-key-app"), **service_key) as svc:
        register(sandbox, svc, "svc-key-app", "confidential-asymmetric", jwks_url=f"{svc.base_url}/x")
        assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": "svc-ec"}).status_code == 200
        login = f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart"
        r = httpx.get(login, timeout=30, follow_redirects=False)
        assert r.status_code >= 400 and "ES384" in r.text, r.text


def test_sal05_backend_connection_signing_an_alg_the_server_does_not_advertise_is_refused_at_setup(
    make_settings, sandbox
) -> None:
    """A backend connection is set up as a launch is: the EC service key signs ES384, which an RS384-only server does
    not list, so creating the connection is refused (409 ``configuration_error`` naming the alg) before its first
    token call; before, the assertion was sent and the EHR's refusal read as a registration problem
    (``client_grant_refused``)."""
    sandbox_admin(sandbox, "settings", {"assertion_algs": ["RS384"]})
    service_key = {"EHR_JWT_PRIVATE_KEY": ec_pem(), "EHR_JWT_KEY_ID": "svc-ec"}
    with running_service(make_settings, sandbox, smart_practice(sandbox, "ec-bulk"), **service_key) as svc:
        jwks = f"{svc.base_url}/api/integrations/ehr/jwks"
        register(sandbox, svc, "ec-bulk", "backend", jwks_url=jwks, allowed_scopes="system/*.rs")
        assert svc.admin("PUT", "/api/integrations/admin/providers/smart", json={"kid": "svc-ec"}).status_code == 200
        body = {"provider": "smart", "scope": "system/Patient.rs"}
        r = svc.admin("POST", "/api/integrations/admin/backend-connections", json=body)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "configuration_error" and "ES384" in r.json()["message"], r.text
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        failed = next(e for e in events if e["action"] == "backend.create")
        assert failed["outcome"] == "failure" and failed["detail"]["error_code"] == "configuration_error"
        assert not [rec for rec in sandbox.state.auth.tokens.values() if rec.client_id == "ec-bulk"]
