"""Where an id_token's keys are found (SAL-33), against the sandbox over a real socket: the issuer's OpenID
configuration names its ``jwks_uri``; a SMART server that publishes none names it only in its smart-configuration
(SMART App Launch 2 with ``sso-openid-connect``); a server that moves its keys is read again. The issuer is checked
against the allow-list before any of these fetches (SAL-41)."""

from __future__ import annotations

from functools import partial

import httpx
import pytest

from connectors.errors import DiscoveryError, SecurityPolicyError
from connectors.smart import JwksCache, discover, validate_id_token
from connectors.smart.idtoken import JWKS_CACHE_MAX_ENTRIES, JWKS_MAX_KEYS
from sandbox import SandboxServer
from tests.sandbox.helpers import patient_login


def test_sal33_sal41_without_an_openid_configuration_the_smart_configuration_names_the_keys(
    sandbox: SandboxServer,
) -> None:
    """The OpenID configuration answers 404: the smart-configuration's ``jwks_uri`` verifies the id_token (before,
    every sign-in granting ``openid`` failed there). Without it there is nothing to go by; an issuer off the
    allow-list is refused before any fetch."""
    sandbox.admin.settings(openid_configuration=False)
    http = httpx.Client(timeout=30)
    cid, answer = patient_login(sandbox)
    cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.issuer == sandbox.fhir_base and cfg.jwks_uri == sandbox.base_url + "/oauth/jwks"
    check = partial(validate_id_token, answer["id_token"], issuer=cfg.issuer, client_id=cid, http=http)

    claims = check(smart_jwks_uri=cfg.jwks_uri, cache=JwksCache(), allowlist=[sandbox.fhir_base])
    assert claims["aud"] == cid and claims["fhirUser"]
    with pytest.raises(DiscoveryError, match=r"openid-configuration at .* unusable \(HTTP 404\)"):
        check(cache=JwksCache(), allowlist=[sandbox.fhir_base])
    with pytest.raises(SecurityPolicyError, match="not on this tenant's allow-list"):
        check(smart_jwks_uri=cfg.jwks_uri, cache=JwksCache(), allowlist=["https://ehr.example.org/fhir"])


def test_sal33_a_moved_jwks_uri_is_read_again_once_its_cache_entry_expires(sandbox: SandboxServer) -> None:
    """The issuer moves its keys (both documents name the new URL, the old one answers 404): once the cache's TTL
    has passed the OpenID configuration is read again. Before, an issuer's ``jwks_uri`` was cached for good: every
    sign-in failed until the process restarted."""
    now = [0.0]
    cache = JwksCache(ttl_seconds=600, clock=lambda: now[0])
    http = httpx.Client(timeout=30)
    cid, answer = patient_login(sandbox)
    check = partial(validate_id_token, answer["id_token"], issuer=sandbox.fhir_base, client_id=cid, http=http)
    assert check(cache=cache)["aud"] == cid

    sandbox.admin.settings(jwks_moved=True)
    assert httpx.get(sandbox.base_url + "/oauth/jwks").status_code == 404
    now[0] = 601.0
    assert check(cache=cache)["aud"] == cid


def test_sal33_an_unknown_kid_reads_where_the_keys_are_again(sandbox: SandboxServer) -> None:
    """Within the TTL the issuer moves its keys and signs with a new one: the unknown ``kid`` makes the one refetch
    read the OpenID configuration again too, not only the old key set's URL (which now answers 404)."""
    cache = JwksCache(ttl_seconds=3600, clock=lambda: 0.0)
    http = httpx.Client(timeout=30)
    cid, answer = patient_login(sandbox)
    assert validate_id_token(answer["id_token"], issuer=sandbox.fhir_base, client_id=cid, http=http, cache=cache)

    sandbox.admin.settings(jwks_moved=True)
    sandbox.admin.set_fault("id_token", error="rotated_kid")
    cid, answer = patient_login(sandbox)
    claims = validate_id_token(answer["id_token"], issuer=sandbox.fhir_base, client_id=cid, http=http, cache=cache)
    assert claims["aud"] == cid


def test_sal33_the_key_sets_held_stay_bounded_however_many_jwks_uris_are_named(sandbox: SandboxServer) -> None:
    """Sign-ins naming a new ``jwks_uri`` each time (an allow-listed issuer that changes it, many issuers of a
    multi-tenant auth service) leave at most ``JWKS_CACHE_MAX_ENTRIES`` key sets held: the least recently used goes,
    and expired ones are dropped when another is stored. Before, every key set was kept for good, each up to the
    response limit: the auth service's memory grew with every such sign-in."""
    now = [0.0]
    cache = JwksCache(ttl_seconds=600, clock=lambda: now[0])
    http = httpx.Client(timeout=30)
    cid, answer = patient_login(sandbox)
    jwks = sandbox.base_url + "/oauth/jwks"

    def check(uri: str) -> dict[str, object]:
        return validate_id_token(
            answer["id_token"], issuer=sandbox.fhir_base, client_id=cid, http=http, cache=cache, jwks_uri=uri
        )

    for n in range(1, JWKS_CACHE_MAX_ENTRIES + 20):
        check(f"{jwks}?n={n}")
        check(f"{jwks}?n=0")  # read often: the most recently used
    assert cache.held() == (0, JWKS_CACHE_MAX_ENTRIES)

    sandbox.admin.settings(jwks_moved=True)  # /oauth/jwks answers 404: only what is held still verifies
    assert check(f"{jwks}?n=0")["aud"] == cid
    assert check(f"{jwks}?n={JWKS_CACHE_MAX_ENTRIES + 19}")["aud"] == cid
    with pytest.raises(DiscoveryError, match=r"JWKS at .* unusable \(HTTP 404\)"):
        check(f"{jwks}?n=1")  # the least recently used went

    now[0] = 601.0  # every entry expired: the next one stored drops them
    assert check(sandbox.base_url + "/oauth/keys")["aud"] == cid
    assert cache.held() == (0, 1)


def test_sal33_the_issuers_jwks_uris_held_stay_bounded(sandbox: SandboxServer) -> None:
    """Where each issuer's keys are is held for at most ``JWKS_CACHE_MAX_ENTRIES`` issuers too (a multi-tenant auth
    service's many EHRs; here issuers without an OpenID configuration, so their smart-configuration ``jwks_uri``)."""
    cache = JwksCache(ttl_seconds=600, clock=lambda: 0.0)
    http = httpx.Client(timeout=30)
    jwks = sandbox.base_url + "/oauth/jwks"
    for n in range(JWKS_CACHE_MAX_ENTRIES + 5):
        assert cache.jwks_uri_for(f"{sandbox.base_url}/tenant{n}", http, smart_jwks_uri=f"{jwks}?n={n}")
    assert cache.held() == (JWKS_CACHE_MAX_ENTRIES, 0)
    assert (
        cache.jwks_uri_for(f"{sandbox.base_url}/tenant{JWKS_CACHE_MAX_ENTRIES + 4}", http)
        == f"{jwks}?n={JWKS_CACHE_MAX_ENTRIES + 4}"
    )


def test_sal33_a_key_set_longer_than_jwks_max_keys_is_refused_naming_its_jwks_uri(sandbox: SandboxServer) -> None:
    """An issuer whose JWKS lists more than ``JWKS_MAX_KEYS`` keys (one that never prunes them, or one filling the
    response limit) is refused with a DiscoveryError naming its ``jwks_uri``, and nothing is held. Before, the whole
    set was kept in the cache (up to 64 such sets) and searched on every sign-in. At the cap it still verifies."""
    http = httpx.Client(timeout=30)
    cid, answer = patient_login(sandbox)
    check = partial(validate_id_token, answer["id_token"], issuer=sandbox.fhir_base, client_id=cid, http=http)
    sandbox.admin.settings(jwks_extra_keys=JWKS_MAX_KEYS - 1)
    assert check(cache=JwksCache())["aud"] == cid

    sandbox.admin.settings(jwks_extra_keys=5000)
    cache = JwksCache()
    jwks = sandbox.base_url + "/oauth/jwks"
    with pytest.raises(DiscoveryError, match=rf"JWKS at {jwks} lists 5001 keys, more than the {JWKS_MAX_KEYS}"):
        check(cache=cache)
    assert cache.held() == (1, 0)
