"""The pipelines' vault (no auth-service resolver) signs with the service key exactly as the auth service does.

The auth service builds a ``private_key_jwt`` client from ``EHR_JWT_PRIVATE_KEY`` + ``EHR_JWT_KEY_ID`` and signs
with the alg that key is for (ES384 for an EC P-384 key). The pipelines mint the same backend connection's later
tokens (every few minutes) through ``client_auth_from_config`` from the stored config and the environment alone;
README: "the pipelines sign their client_credentials assertions with the same key". A provider config naming only
the kid (or only ``auth_method``) must mint there too, signed with the key's own alg, never fail on the first
re-mint of a connection the auth service created fine.
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from connectors.errors import ConfigurationError
from connectors.smart import CLIENT_ASSERTION_TYPE
from store import AppDatabase, TokenCipher, TokenVault, client_auth_from_config, save_provider_config
from store.models import Connection
from store.vault import RetryPolicy
from tests.connectors.smart.keys import ec_key, pem, rsa_key
from tests.store.conftest import add_connection
from tests.store.tokenserver import RunningTokenServer


def _mint(db: AppDatabase, cipher: TokenCipher, server: RunningTokenServer, config: Any, env: dict[str, str]) -> str:
    add_connection(
        db,
        fhir_base=server.fhir_base,
        token_endpoint=server.token_endpoint,
        kind="backend",
        scopes="system/Patient.rs",
        provider_id="smart",
    )
    with db.session() as s, s.begin():
        save_provider_config(s, cipher, tenant_id="t1", provider_id="smart", config=config)
    http = httpx.Client(timeout=10)
    vault = TokenVault(db, cipher, http, environ=env, retry=RetryPolicy(attempts=1), sleep=lambda _s: None)
    try:
        return vault.get_access_token("c1")
    finally:
        http.close()


@pytest.mark.parametrize(
    ("key", "alg"), [(ec_key(), "ES384"), (rsa_key(), "RS384")], ids=["ec-service-key", "rsa-service-key"]
)
@pytest.mark.parametrize(
    "config", [{"kid": "svc-kid"}, {"auth_method": "private_key_jwt"}], ids=["config-kid", "config-method-only"]
)
def test_backend_mint_signs_with_the_service_key_and_its_alg(
    db: AppDatabase,
    cipher: TokenCipher,
    token_server: RunningTokenServer,
    key: Any,
    alg: str,
    config: dict[str, str],
) -> None:
    env = {"EHR_JWT_PRIVATE_KEY": pem(key), "EHR_JWT_KEY_ID": "svc-kid"}
    assert _mint(db, cipher, token_server, {"client_id": "app-1", **config}, env) == "at-1"
    (grant,) = token_server.state.grants
    form = grant["form"]
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    header = jwt.get_unverified_header(form["client_assertion"])
    assert (header["alg"], header["kid"]) == (alg, "svc-kid")
    claims = jwt.decode(
        form["client_assertion"], key.public_key(), algorithms=[alg], audience=token_server.token_endpoint
    )
    assert claims["iss"] == claims["sub"] == "app-1"


@pytest.mark.parametrize("answer", ["", "  "], ids=["empty", "blank"])
def test_blank_granted_scope_keeps_the_scope_asked_for(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer, answer: str
) -> None:
    """RFC 6749 §5.1: a token answer may leave ``scope`` out when it is the one asked for; some servers send it
    blank instead. A blank scope is no scope: before, it replaced the connection's granted scopes with "", and
    the next backend mint found none to ask for (ConfigurationError, every sync after the first token expired)."""
    token_server.state.answer_scope = answer
    env = {"EHR_JWT_PRIVATE_KEY": pem(rsa_key()), "EHR_JWT_KEY_ID": "svc-kid"}
    assert _mint(db, cipher, token_server, {"client_id": "app-1", "kid": "svc-kid"}, env) == "at-1"
    vault = TokenVault(db, cipher, httpx.Client(timeout=10), environ=env, retry=RetryPolicy(attempts=1))
    assert vault.force_refresh("c1") == "at-2"
    assert [g["form"]["scope"] for g in token_server.state.grants] == ["system/Patient.rs", "system/Patient.rs"]
    with db.session() as s:
        assert s.get(Connection, "c1").granted_scopes == "system/Patient.rs"  # type: ignore[union-attr]


def test_backend_mint_strips_the_whitespace_around_the_service_kid(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """``EHR_JWT_KEY_ID=" svc-kid "`` signs as the auth service publishes it (``svc-kid``): before, the pipelines'
    assertions carried the spaces, a kid the EHR's copy of our JWKS does not have."""
    env = {"EHR_JWT_PRIVATE_KEY": pem(ec_key()), "EHR_JWT_KEY_ID": " svc-kid \t"}
    assert _mint(db, cipher, token_server, {"client_id": "app-1", "auth_method": "private_key_jwt"}, env) == "at-1"
    (grant,) = token_server.state.grants
    assert jwt.get_unverified_header(grant["form"]["client_assertion"])["kid"] == "svc-kid"


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "spaces"])
def test_a_blank_service_kid_is_unset(blank: str) -> None:
    env = {"EHR_JWT_PRIVATE_KEY": pem(ec_key()), "EHR_JWT_KEY_ID": blank}
    with pytest.raises(
        ConfigurationError, match="needs 'key_id' \\(the JWKS kid\\) in the provider config or EHR_JWT_KEY_ID"
    ):
        client_auth_from_config({"auth_method": "private_key_jwt"}, client_id="app-1", environ=env)
