"""A private key is parsed once per process (SAL-29): loading an RSA key checks it (36 ms of CPU at 2048 bits, 110 ms
at 3072), and before, the pipelines' vault parsed the connection's key again for every token refresh's client
assertion, and the auth service its own key several times per sign-in (settings check, JWKS, alg, PEM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_service.core.keys import load_private_key
from connectors.errors import ConfigurationError
from connectors.smart import JwtClientAuth
from connectors.smart.client_auth import SigningKey
from store import client_auth_from_config
from tests.connectors.smart.keys import ec_key, pem, rsa_key


def _key_of(private_key_pem: str) -> SigningKey:
    """The key the vault's client authentication (``client_auth_from_config``, each refresh) signs with."""
    auth = client_auth_from_config({"private_key_pem": private_key_pem, "key_id": "k1"}, client_id="c", environ={})
    assert isinstance(auth, JwtClientAuth)
    return auth._settings.private_key


def test_the_vaults_client_auth_signs_with_the_key_parsed_once_sal29() -> None:
    first = _key_of(pem(rsa_key()))
    assert _key_of(pem(rsa_key())) is first
    other = _key_of(pem(rsa_key(1)))  # another key is its own
    assert other is not first and other.private_numbers() == rsa_key(1).private_numbers()


def test_the_auth_services_key_is_parsed_once_as_text_or_file(tmp_path: Path) -> None:
    key_file = tmp_path / "ehr.pem"
    key_file.write_text(pem(ec_key()))
    assert load_private_key(pem(ec_key())) is load_private_key(pem(ec_key())) is load_private_key(str(key_file))


@pytest.mark.parametrize("bad", ["-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", ""])
def test_an_unreadable_key_is_refused_every_time_not_remembered(bad: str) -> None:
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            _key_of(bad or "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
        with pytest.raises(ValueError, match="EHR_JWT_PRIVATE_KEY"):
            load_private_key(bad or "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
