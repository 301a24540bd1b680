"""Discovery: smart-configuration, CapabilityStatement, OpenID configuration and JWKS (SAL-01..04)."""

from __future__ import annotations

import httpx
import pytest

from sandbox import SandboxServer
from sandbox.config import SMART_FIELDS


def test_sal01_sal02_smart_configuration_publishes_every_field(sandbox: SandboxServer) -> None:
    resp = httpx.get(sandbox.fhir_base + "/.well-known/smart-configuration")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert set(SMART_FIELDS) <= set(doc)
    assert doc["issuer"] == sandbox.fhir_base
    assert doc["token_endpoint"] == sandbox.base_url + "/oauth/token"
    assert doc["code_challenge_methods_supported"] == ["S256"]  # SAL-03
    assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])


@pytest.mark.parametrize("field", ["token_endpoint", "code_challenge_methods_supported", "capabilities"])
def test_sal02_flag_drops_one_field(sandbox: SandboxServer, field: str) -> None:
    sandbox.admin.settings(drop_smart_fields=[field])
    doc = httpx.get(sandbox.fhir_base + "/.well-known/smart-configuration").json()
    assert field not in doc
    assert "authorization_endpoint" in doc


def test_sal04_v1_profile_serves_only_the_capability_statement(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(profile="v1")
    resp = httpx.get(sandbox.fhir_base + "/.well-known/smart-configuration")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"
    cap = httpx.get(sandbox.fhir_base + "/metadata").json()
    security = cap["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    ext = next(e for e in security["extension"] if e["url"].endswith("StructureDefinition/oauth-uris"))
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["token"] == sandbox.base_url + "/oauth/token"
    assert uris["authorize"] == sandbox.base_url + "/oauth/authorize"


def test_capability_statement_lists_interactions_last_updated_and_export(sandbox: SandboxServer) -> None:
    resp = httpx.get(sandbox.fhir_base + "/metadata")
    assert resp.headers["content-type"].startswith("application/fhir+json")
    cap = resp.json()
    assert cap["resourceType"] == "CapabilityStatement" and cap["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in cap["rest"][0]["resource"]}
    obs = resources["Observation"]
    assert {"read", "search-type"} == {i["code"] for i in obs["interaction"]}
    assert "_lastUpdated" in {p["name"] for p in obs["searchParam"]}
    assert "create" in {i["code"] for i in resources["DocumentReference"]["interaction"]}
    assert cap["rest"][0]["operation"][0]["name"] == "export"


def test_write_switched_off_removes_create_interactions(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(write_enabled=False)
    cap = httpx.get(sandbox.fhir_base + "/metadata").json()
    for r in cap["rest"][0]["resource"]:
        assert "create" not in {i["code"] for i in r["interaction"]}, r["type"]


def test_sal33_openid_configuration_and_jwks(sandbox: SandboxServer) -> None:
    oidc = httpx.get(sandbox.fhir_base + "/.well-known/openid-configuration").json()
    assert oidc["issuer"] == sandbox.fhir_base
    assert "RS256" in oidc["id_token_signing_alg_values_supported"]
    jwks = httpx.get(oidc["jwks_uri"]).json()
    key = jwks["keys"][0]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["kid"]
    assert "d" not in key  # public members only


def test_sal04_v1_well_known_profile_serves_a_smart_1_document_beside_the_capability_statement(
    sandbox: SandboxServer,
) -> None:
    sandbox.admin.settings(profile="v1_well_known")
    doc = httpx.get(sandbox.fhir_base + "/.well-known/smart-configuration").json()
    assert doc["authorization_endpoint"] == sandbox.base_url + "/oauth/authorize"
    assert doc["token_endpoint"] == sandbox.base_url + "/oauth/token"
    for field in ("grant_types_supported", "code_challenge_methods_supported", "issuer", "jwks_uri"):
        assert field not in doc  # SMART 2.0 additions
    assert "launch-standalone" in doc["capabilities"]
    assert not {"permission-v1", "permission-v2", "client-confidential-asymmetric"} & set(doc["capabilities"])
    assert "patient/*.read" in doc["scopes_supported"] and "patient/*.rs" not in doc["scopes_supported"]
    cap = httpx.get(sandbox.fhir_base + "/metadata").json()
    assert any(e["url"].endswith("oauth-uris") for e in cap["rest"][0]["security"]["extension"])
