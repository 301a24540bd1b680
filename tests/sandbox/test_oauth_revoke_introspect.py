"""The sandbox's revocation (RFC 7009, SAL-34) and introspection (RFC 7662, SAL-35) endpoints."""

from __future__ import annotations

import httpx

from sandbox import SandboxServer
from tests.sandbox.helpers import bearer, patient_login


def test_sal34_a_revoked_access_token_fails_introspection_and_the_fhir_api(sandbox: SandboxServer) -> None:
    """SAL-34 (server): an access token revoked by itself is inactive at introspection and refused by the FHIR API
    (401), while the refresh token of the same grant stays live (only revoking a refresh token ends the family)."""
    cid, token = patient_login(sandbox, patient="pat1")
    url, access = sandbox.base_url, token["access_token"]
    assert httpx.get(f"{sandbox.fhir_base}/Patient/pat1", headers=bearer(access)).status_code == 200
    assert httpx.post(url + "/oauth/revoke", data={"token": access, "client_id": cid}).status_code == 200
    assert httpx.post(url + "/oauth/introspect", data={"token": access, "client_id": cid}).json() == {"active": False}
    assert httpx.get(f"{sandbox.fhir_base}/Patient/pat1", headers=bearer(access)).status_code == 401
    live = httpx.post(url + "/oauth/introspect", data={"token": token["refresh_token"], "client_id": cid}).json()
    assert live["active"] is True


def test_sal35_an_active_token_is_introspected_with_its_user_and_issuer(sandbox: SandboxServer) -> None:
    """SAL-35 (server): an active token's introspection has ``scope``, ``client_id``, ``exp``, and as they apply
    ``patient``, ``fhirUser``, ``iss`` and ``sub`` (the signed-in patient here)."""
    cid, token = patient_login(sandbox, patient="pat2")
    got = httpx.post(
        sandbox.base_url + "/oauth/introspect", data={"token": token["access_token"], "client_id": cid}
    ).json()
    assert got["active"] is True and got["client_id"] == cid and got["patient"] == "pat2"
    assert got["fhirUser"] == f"{sandbox.fhir_base}/Patient/pat2" and got["sub"] == "pat2"
    assert got["iss"] == sandbox.fhir_base and isinstance(got["exp"], int)
