"""``ProviderPlugin.check_client_auth``: a plugin's declared ``auth_methods`` (vendors.md §8) bind."""

from __future__ import annotations

import pytest

from connectors.errors import AuthMethodNotAllowedError, ConfigurationError
from connectors.providers import all_providers, check_provider_client_auth, get_provider
from connectors.smart import JwtClientAuth, PublicClientAuth, SecretClientAuth
from tests.connectors.smart.keys import ec_key, pem


@pytest.mark.parametrize("plugin", all_providers(), ids=lambda p: p.id)
def test_every_declared_method_alg_and_grant_is_accepted(plugin) -> None:
    for declared in plugin.auth_methods:
        for alg in declared.signing_algs or (None,):
            plugin.check_client_auth(declared.method, alg, grant=declared.grant)
            plugin.check_client_auth(declared.method, alg)


def test_ecw_refuses_es384_and_a_client_secret_naming_what_it_allows() -> None:
    ecw = get_provider("ecw")
    with pytest.raises(AuthMethodNotAllowedError) as caught:
        ecw.check_client_auth("private_key_jwt", "ES384", grant="client_credentials")
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.message == (
        "eClinicalWorks (ecw) does not accept client auth private_key_jwt ES384 for client_credentials; "
        "allowed: private_key_jwt RS384 (client_credentials) (vendors.md §8 auth_methods)"
    )
    with pytest.raises(AuthMethodNotAllowedError, match="client_secret_basic; allowed: none"):
        ecw.check_client_auth("client_secret_basic")


def test_epic_secret_only_for_the_authorization_code_grant() -> None:
    epic = get_provider("epic")
    epic.check_client_auth("client_secret_basic", grant="authorization_code")
    with pytest.raises(AuthMethodNotAllowedError, match="client_secret_basic for client_credentials"):
        epic.check_client_auth("client_secret_basic", grant="client_credentials")
    with pytest.raises(AuthMethodNotAllowedError):
        epic.check_client_auth("none", grant="client_credentials")


def test_check_provider_client_auth_reads_method_and_alg_of_the_built_auth() -> None:
    es384 = JwtClientAuth("c", pem(ec_key()), "k", alg="ES384")
    with pytest.raises(AuthMethodNotAllowedError, match="private_key_jwt ES384"):
        check_provider_client_auth("ecw", es384, "authorization_code")
    check_provider_client_auth("epic", es384, "client_credentials")
    with pytest.raises(AuthMethodNotAllowedError, match=r"PointClickCare \(pcc\)"):
        check_provider_client_auth("pcc", PublicClientAuth("c"), "authorization_code")
    # generic SMART servers (and the tenant's own, "smart") are decided by their discovery (vendors.md §7)
    for provider_id in ("generic", "smart", "unknown-id"):
        check_provider_client_auth(provider_id, SecretClientAuth("c", "s"), "client_credentials")
