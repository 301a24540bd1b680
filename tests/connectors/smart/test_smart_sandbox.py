"""Client auth against the sandbox's real token server (SAL-28, SAL-29, SAL-32, SAL-35, SAL-36)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from connectors.errors import InvalidClientError, InvalidScopeError, TransportError
from connectors.smart import (
    JwtClientAuth,
    SecretClientAuth,
    client_credentials_grant,
    discover,
    introspect_token,
    parse_scopes,
)
from sandbox import SandboxConfig, SandboxServer
from tests.connectors.smart.keys import ec_key, pem, public_jwk, rsa_key


@pytest.mark.parametrize(("alg", "key"), [("RS384", rsa_key()), ("ES384", ec_key())])
def test_sal32_backend_token_with_signed_assertion(sandbox: SandboxServer, alg: str, key: Any) -> None:
    client_id = f"backend-{uuid.uuid4().hex[:8]}"
    jwks = {"keys": [public_jwk(key, "kid-a", alg)]}
    sandbox.admin.register_client(client_id, "backend", jwks=jwks, allowed_scopes="system/*.rs")
    http = httpx.Client(timeout=30)
    cfg = discover(sandbox.fhir_base, http=http)
    auth = JwtClientAuth(client_id, pem(key), kid="kid-a", alg=alg)
    first = client_credentials_grant(cfg.token_endpoint, http=http, client_auth=auth, scope="system/Patient.rs")
    assert first.refresh_token is None and first.expires_in > 0
    assert parse_scopes(first.scope).allows("Patient", "search")
    second = client_credentials_grant(cfg.token_endpoint, http=http, client_auth=auth, scope="system/Patient.rs")
    assert second.access_token != first.access_token  # a fresh jti each time: no replay rejection
    with pytest.raises(InvalidScopeError):
        client_credentials_grant(cfg.token_endpoint, http=http, client_auth=auth, scope="system/Patient.cud")


def test_sal29_unknown_kid_is_invalid_client(sandbox: SandboxServer) -> None:
    client_id = f"backend-{uuid.uuid4().hex[:8]}"
    sandbox.admin.register_client(
        client_id, "backend", jwks={"keys": [public_jwk(rsa_key(), "kid-a", "RS384")]}, allowed_scopes="system/*.rs"
    )
    http = httpx.Client(timeout=30)
    cfg = discover(sandbox.fhir_base, http=http)
    auth = JwtClientAuth(client_id, pem(rsa_key()), kid="kid-other")
    with pytest.raises(InvalidClientError):
        client_credentials_grant(cfg.token_endpoint, http=http, client_auth=auth, scope="system/Patient.rs")


def test_sal28_basic_auth_with_special_characters_accepted(sandbox: SandboxServer) -> None:
    client_id = f"conf:{uuid.uuid4().hex[:6]}"
    secret = "s3cr+t/=&:% ~"  # the sandbox compares secrets as ASCII str (non-ASCII crashes it: reported)
    sandbox.admin.register_client(
        client_id, "confidential-symmetric", client_secret=secret, redirect_uris=["http://127.0.0.1:9/cb"]
    )
    http = httpx.Client(timeout=30)
    cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.introspection_endpoint
    result = introspect_token(
        cfg.introspection_endpoint, http=http, client_auth=SecretClientAuth(client_id, secret), token="not-a-token"
    )
    assert result.active is False
    with pytest.raises(InvalidClientError):
        introspect_token(
            cfg.introspection_endpoint, http=http, client_auth=SecretClientAuth(client_id, "wrong"), token="x"
        )


def test_sal04_v1_profile_found_through_metadata() -> None:
    with SandboxServer(SandboxConfig(patients=1, profile="v1")) as v1:
        cfg = discover(v1.fhir_base, http=httpx.Client(timeout=30))
    assert cfg.smart_v1
    assert cfg.token_endpoint.startswith(v1.base_url)
    assert cfg.authorization_endpoint


def test_sal02_dropped_required_field_without_metadata_is_not_guessed(sandbox: SandboxServer) -> None:
    """The fallback for a missing field is the server's CapabilityStatement (test_discovery_fallback.py);
    when that answers 5xx too, discovery fails (transiently) instead of guessing an endpoint."""
    sandbox.admin.settings(drop_smart_fields=["token_endpoint"])
    sandbox.admin.set_fault("500", path="/fhir/metadata", times=None)
    with pytest.raises(TransportError, match="metadata"):
        discover(sandbox.fhir_base, http=httpx.Client(timeout=30))


@pytest.mark.parametrize(("alg", "key"), [("RS384", rsa_key()), ("ES384", ec_key())])
def test_sal29_assertion_accepted_by_a_server_strict_on_exp_and_a_little_behind(alg: str, key: Any) -> None:
    """SAL-29/31: ``exp`` SHALL be no more than five minutes in the future, and servers check it on their own
    clock. An assertion expiring exactly 300 s after our clock's second was refused (invalid_client, every
    token request) by a server holding the rule without leeway whose clock is a second or two behind ours; the
    assertion keeps a margin under the 5 minutes."""
    with SandboxServer(SandboxConfig(patients=1, assertion_exp_leeway_s=0, clock_shift_s=-2)) as strict:
        client_id = f"backend-{uuid.uuid4().hex[:8]}"
        jwks = {"keys": [public_jwk(key, "kid-a", alg)]}
        strict.admin.register_client(client_id, "backend", jwks=jwks, allowed_scopes="system/*.rs")
        http = httpx.Client(timeout=30)
        cfg = discover(strict.fhir_base, http=http)
        auth = JwtClientAuth(client_id, pem(key), kid="kid-a", alg=alg)
        token = client_credentials_grant(cfg.token_endpoint, http=http, client_auth=auth, scope="system/Patient.rs")
        assert token.access_token
