"""The vault refuses a connection's client auth when its vendor's plugin does not declare it for the
connection's grant (vendors.md §8 ``auth_methods``): the pipelines mint backend tokens through this path, from
the stored provider config alone, so the check holds there too, before any token request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors.errors import AuthMethodNotAllowedError
from store import AppDatabase, TokenCipher, TokenVault, save_provider_config
from store.vault import RetryPolicy
from tests.connectors.smart.keys import ec_key, pem, rsa_key
from tests.store.conftest import add_connection
from tests.store.tokenserver import RunningTokenServer


def _backend(db: AppDatabase, cipher: TokenCipher, server: RunningTokenServer, provider_id: str, config: Any) -> None:
    add_connection(
        db,
        fhir_base=server.fhir_base,
        token_endpoint=server.token_endpoint,
        kind="backend",
        scopes="system/Patient.read",
        provider_id=provider_id,
    )
    with db.session() as s, s.begin():
        save_provider_config(s, cipher, tenant_id="t1", provider_id=provider_id, config=config)


def _vault(db: AppDatabase, cipher: TokenCipher) -> TokenVault:
    return TokenVault(db, cipher, httpx.Client(timeout=10), retry=RetryPolicy(attempts=1), sleep=lambda _s: None)


def test_epic_backend_connection_with_a_client_secret_mints_nothing(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """vendors.md §1/§2: an Epic backend app authenticates with a signed JWT, never client_secret_basic."""
    _backend(db, cipher, token_server, "epic", {"client_secret": "s"})
    with pytest.raises(AuthMethodNotAllowedError, match=r"Epic \(epic\).*client_secret_basic for client_credentials"):
        _vault(db, cipher).get_access_token("c1")
    assert token_server.state.grants == []


def test_ecw_backend_connection_signs_rs384_only(
    db: AppDatabase, cipher: TokenCipher, token_server: RunningTokenServer
) -> None:
    """vendors.md §4: eCW JWT assertions are RS384 only; an ES384 key is refused, an RSA key mints."""
    _backend(db, cipher, token_server, "ecw", {"private_key_pem": pem(ec_key()), "key_id": "k", "signing_alg": "ES384"})
    with pytest.raises(AuthMethodNotAllowedError, match=r"eClinicalWorks \(ecw\).*private_key_jwt ES384"):
        _vault(db, cipher).get_access_token("c1")
    assert token_server.state.grants == []
    with db.session() as s, s.begin():
        save_provider_config(
            s, cipher, tenant_id="t1", provider_id="ecw", config={"private_key_pem": pem(rsa_key()), "key_id": "k"}
        )
    assert _vault(db, cipher).get_access_token("c1") == "at-1"
    assert [g["form"]["grant_type"] for g in token_server.state.grants] == ["client_credentials"]
