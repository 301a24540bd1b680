"""Key rotation over stored rows, provider-config secrets and client auth from config (SAL-17, SAL-27..29)."""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy import select

from connectors.errors import ConfigurationError
from connectors.smart import JwtClientAuth, PublicClientAuth, SecretClientAuth, parse_token_response
from store import (
    AppDatabase,
    CipherError,
    OAuthStateStore,
    TokenCipher,
    TokenVault,
    client_auth_from_config,
    load_provider_config,
    rotate_keys,
    save_provider_config,
)
from store.crypto import derive_kid
from store.models import ProviderConfig, TokenRecord
from tests.connectors.smart.keys import ec_key, pem, rsa_key
from tests.store.conftest import add_connection


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_rotate_keys_reencrypts_everything_and_old_key_can_go(db: AppDatabase) -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old = TokenCipher(old_key)
    add_connection(db, fhir_base="https://ehr.example/fhir")
    add_connection(db, fhir_base="https://ehr.example/fhir", connection_id="c2")
    vault = TokenVault(db, old)
    body = {"access_token": "AT", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "RT", "id_token": "IDT"}
    vault.save_token_response("c1", parse_token_response(body))
    vault.save_token_response("c2", parse_token_response({**body, "refresh_token": None, "id_token": None}))
    with db.session() as s, s.begin():
        save_provider_config(
            s, old, tenant_id="t1", provider_id="generic", config={"client_id": "x", "clientSecret": "S3"}
        )
    state = OAuthStateStore(db, old).create(
        browser_session="b",
        tenant_id="t1",
        provider_id="generic",
        issuer="https://ehr.example/fhir",
        code_verifier="v" * 50,
    )

    both = TokenCipher.from_env(
        {
            "INTEGRATIONS_TOKEN_ENC_KEY": b64(new_key),
            "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"{derive_kid(old_key)}:{b64(old_key)}",
        }
    )
    assert TokenVault(db, both).get_access_token("c1") == "AT"  # rotation window: old rows still open
    assert rotate_keys(db, both) == 3 + 1 + 1 + 1  # c1 three tokens, c2 one, one secret, one state verifier
    assert rotate_keys(db, both) == 0

    only_new = TokenCipher(new_key)
    assert TokenVault(db, only_new).get_access_token("c1") == "AT"
    assert TokenVault(db, only_new).get_access_token("c2") == "AT"
    with db.session() as s:
        assert {r.key_id for r in s.scalars(select(TokenRecord))} == {only_new.active_kid}
        assert load_provider_config(s, only_new, "t1", "generic")["client_secret"] == "S3"
    assert OAuthStateStore(db, only_new).consume(state, browser_session="b").code_verifier == "v" * 50


def test_provider_secrets_sealed_and_bound_to_provider(db: AppDatabase, cipher: TokenCipher) -> None:
    add_connection(db, fhir_base="https://ehr.example/fhir")
    with db.session() as s, s.begin():
        save_provider_config(
            s, cipher, tenant_id="t1", provider_id="epic", config={"client_secret": "S3cret", "scope": "a"}
        )
    with db.session() as s, s.begin():
        row = s.scalars(select(ProviderConfig)).one()
        assert "S3cret" not in repr(row.config)
        assert load_provider_config(s, cipher, "t1", "epic") == {"client_secret": "S3cret", "scope": "a"}
        row.provider_id = "cerner"  # a sealed secret copied to another provider's row does not open
    with db.session() as s, pytest.raises(CipherError, match="tampered or moved"):
        load_provider_config(s, cipher, "t1", "cerner")


@pytest.mark.parametrize(
    ("config", "cls"),
    [
        ({}, PublicClientAuth),
        ({"auth_method": "public"}, PublicClientAuth),
        ({"clientSecret": "s"}, SecretClientAuth),
        ({"private_key_pem": pem(rsa_key()), "kid": "k"}, JwtClientAuth),
        (
            {"auth_method": "private_key_jwt", "privateKeyPem": pem(ec_key()), "keyId": "k", "alg": "ES384"},
            JwtClientAuth,
        ),
    ],
)
def test_client_auth_from_config(config: dict[str, str], cls: type) -> None:
    assert isinstance(client_auth_from_config(config, client_id="c", environ={}), cls)


def test_client_auth_private_key_from_environment() -> None:
    auth = client_auth_from_config(
        {"auth_method": "private_key_jwt", "key_id": "k"},
        client_id="c",
        environ={"EHR_JWT_PRIVATE_KEY": pem(rsa_key())},
    )
    assert isinstance(auth, JwtClientAuth) and auth.alg == "RS384"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"auth_method": "client_secret_basic"}, "client_secret"),
        ({"auth_method": "private_key_jwt", "key_id": "k"}, "EHR_JWT_PRIVATE_KEY"),
        # a kid names a JWT client (as the auth service reads it): no key here is that error, never a public client
        ({"kid": "k"}, "EHR_JWT_PRIVATE_KEY"),
        ({"kid": "k", "clientSecret": "s"}, "EHR_JWT_PRIVATE_KEY"),
        ({"auth_method": "private_key_jwt", "private_key_pem": pem(rsa_key())}, "key_id"),
        ({"auth_method": "magic"}, "unknown auth_method"),
    ],
)
def test_client_auth_config_errors(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        client_auth_from_config(config, client_id="c", environ={})


def test_rotation_goes_past_a_row_that_does_not_open_and_names_it(db: AppDatabase) -> None:
    """One tokens row that fails authentication (altered, or moved from another row) used to stop
    ``rotate_keys`` there with an error naming only the field: every row after it stayed under the old key, and
    the operator could neither find the bad row nor drop the old key. Every other value is re-encrypted; the error
    names the connection(s) left behind."""
    old_key, new_key = os.urandom(32), os.urandom(32)
    old = TokenCipher(old_key)
    body = {"access_token": "AT", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "RT"}
    for cid in ("c1", "c2", "c3"):
        add_connection(db, fhir_base="https://ehr.example/fhir", connection_id=cid)
        TokenVault(db, old).save_token_response(cid, parse_token_response({**body, "access_token": f"AT-{cid}"}))
    with db.session() as s, s.begin():
        rows = {r.connection_id: r for r in s.scalars(select(TokenRecord))}
        rows["c2"].access_token_ct = rows["c1"].access_token_ct  # moved from another row: fails authentication
        save_provider_config(
            s, old, tenant_id="t1", provider_id="generic", config={"client_id": "x", "clientSecret": "S"}
        )
    both = TokenCipher.from_env(
        {"INTEGRATIONS_TOKEN_ENC_KEY": b64(new_key), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"old:{b64(old_key)}"}
    )
    with pytest.raises(CipherError, match=r"connection\(s\) c2\b") as caught:
        rotate_keys(db, both)
    assert "re-encrypted 5 value(s)" in caught.value.message  # c1 and c3: two tokens each; one provider secret
    only_new = TokenCipher(new_key)
    assert TokenVault(db, only_new).get_access_token("c1") == "AT-c1"
    assert TokenVault(db, only_new).get_access_token("c3") == "AT-c3"
    with db.session() as s:
        assert load_provider_config(s, only_new, "t1", "generic")["client_secret"] == "S"
        c2 = s.get(TokenRecord, "c2")
        assert c2 is not None and both.key_id_of(c2.refresh_token_ct or "") == derive_kid(old_key)  # left as it was
