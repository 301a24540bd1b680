"""Discovery (SAL-01..05) over httpx.MockTransport: pure protocol edge cases."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest

from auth_service.core.config import Settings
from connectors.errors import ConfigurationError, DiscoveryError, SecurityPolicyError, TransportError
from connectors.smart import DiscoveryCache, check_auth_method_supported, discover
from connectors.smart.discovery_cache import DISCOVERY_CACHE_MAX_ENTRIES

BASE = "https://ehr.example/tenant-1/fhir/r4"

FULL: dict[str, Any] = {
    "issuer": BASE,
    "jwks_uri": "https://ehr.example/jwks",
    "authorization_endpoint": "https://ehr.example/oauth/authorize",
    "token_endpoint": "https://ehr.example/oauth/token",
    "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
    "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
    "grant_types_supported": ["authorization_code", "client_credentials"],
    "scopes_supported": ["openid", "fhirUser", "patient/*.rs"],
    "code_challenge_methods_supported": ["S256"],
    "capabilities": ["launch-ehr", "launch-standalone", "client-confidential-asymmetric"],
    "revocation_endpoint": "https://ehr.example/oauth/revoke",
    "introspection_endpoint": "https://ehr.example/oauth/introspect",
}

CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "rest": [
        {
            "mode": "server",
            "security": {
                "service": [{"coding": [{"code": "SMART-on-FHIR"}]}],
                "extension": [
                    {
                        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                        "extension": [
                            {"url": "authorize", "valueUri": "https://ehr.example/v1/authorize"},
                            {"url": "token", "valueUri": "https://ehr.example/v1/token"},
                            {"url": "revoke", "valueUri": "https://ehr.example/v1/revoke"},
                            {"url": "introspect", "valueUri": "https://ehr.example/v1/introspect"},
                            {"url": "register", "valueUri": "https://ehr.example/v1/register"},
                            {"url": "manage", "valueUri": "https://ehr.example/v1/manage"},
                        ],
                    }
                ],
            },
        }
    ],
}


def client(routes: dict[str, httpx.Response], seen: list[str] | None = None) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(str(request.url))
        return routes.get(str(request.url), httpx.Response(404))

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_sal01_well_known_appended_to_base_with_path_and_parsed_despite_content_type() -> None:
    seen: list[str] = []
    body = httpx.Response(200, content=orjson.dumps(FULL), headers={"Content-Type": "text/plain"})
    cfg = discover(BASE, http=client({f"{BASE}/.well-known/smart-configuration": body}, seen))
    assert seen == [f"{BASE}/.well-known/smart-configuration"]
    assert cfg.token_endpoint == FULL["token_endpoint"]
    assert cfg.revocation_endpoint == FULL["revocation_endpoint"]
    assert cfg.supports_s256 and not cfg.smart_v1
    assert cfg.require_user_launch() == FULL["authorization_endpoint"]


def test_sal01_trailing_slash_base_does_not_double_slash() -> None:
    seen: list[str] = []
    routes = {f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=FULL)}
    discover(BASE + "/", http=client(routes, seen))
    assert seen == [f"{BASE}/.well-known/smart-configuration"]


def test_sal02_relative_endpoints_resolve_and_extra_fields_are_kept() -> None:
    doc = {**FULL, "token_endpoint": "/oauth/token", "x-vendor": {"a": 1}}
    cfg = discover(BASE, http=client({f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=doc)}))
    assert cfg.token_endpoint == "https://ehr.example/oauth/token"
    assert cfg.raw["x-vendor"] == {"a": 1}


@pytest.mark.parametrize("field", ["token_endpoint", "capabilities", "grant_types_supported", "authorization_endpoint"])
def test_sal02_missing_required_field_raises_discovery_error(field: str) -> None:
    doc = {k: v for k, v in FULL.items() if k != field}
    routes = {f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=doc)}
    with pytest.raises(DiscoveryError, match=field):
        discover(BASE, http=client(routes))


def test_sal02_backend_only_server_needs_no_authorization_endpoint() -> None:
    doc = {
        "token_endpoint": "https://ehr.example/token",
        "grant_types_supported": ["client_credentials"],
        "capabilities": ["client-confidential-asymmetric"],
    }
    cfg = discover(BASE, http=client({f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=doc)}))
    with pytest.raises(DiscoveryError, match="authorization_endpoint"):
        cfg.require_user_launch()


def test_sal03_no_user_launch_without_s256() -> None:
    doc = {k: v for k, v in FULL.items() if k != "code_challenge_methods_supported"}
    cfg = discover(BASE, http=client({f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=doc)}))
    with pytest.raises(DiscoveryError, match="S256"):
        cfg.require_user_launch()


def test_sal03_plain_advertised_warns_but_s256_is_used(caplog: pytest.LogCaptureFixture) -> None:
    doc = {**FULL, "code_challenge_methods_supported": ["plain", "S256"]}
    cfg = discover(BASE, http=client({f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=doc)}))
    with caplog.at_level(logging.WARNING):
        cfg.require_user_launch()
    assert "plain" in caplog.text


@pytest.mark.parametrize(
    "well_known",
    [httpx.Response(404), httpx.Response(200, content=b"<html>not json</html>")],
    ids=["404", "not-json"],
)
def test_sal04_v1_fallback_to_metadata_oauth_uris(well_known: httpx.Response) -> None:
    routes = {
        f"{BASE}/.well-known/smart-configuration": well_known,
        f"{BASE}/metadata": httpx.Response(200, json=CAPABILITY),
    }
    cfg = discover(BASE, http=client(routes))
    assert cfg.smart_v1
    assert cfg.token_endpoint == "https://ehr.example/v1/token"
    assert cfg.authorization_endpoint == "https://ehr.example/v1/authorize"
    assert cfg.revocation_endpoint == "https://ehr.example/v1/revoke"
    assert cfg.introspection_endpoint == "https://ehr.example/v1/introspect"
    assert cfg.registration_endpoint == "https://ehr.example/v1/register"  # all six oauth-uris are read
    assert cfg.management_endpoint == "https://ehr.example/v1/manage"
    assert cfg.require_user_launch() == "https://ehr.example/v1/authorize"


def test_sal04_metadata_without_oauth_uris_is_a_discovery_error() -> None:
    routes = {f"{BASE}/metadata": httpx.Response(200, json={"resourceType": "CapabilityStatement", "rest": []})}
    with pytest.raises(DiscoveryError, match="oauth-uris"):
        discover(BASE, http=client(routes))


def test_sal01_server_error_is_transient_not_a_fallback() -> None:
    routes = {f"{BASE}/.well-known/smart-configuration": httpx.Response(503)}
    with pytest.raises(TransportError):
        discover(BASE, http=client(routes))


def test_sal01_cache_ttl_per_issuer() -> None:
    now = [0.0]
    seen: list[str] = []
    routes = {f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=FULL)}
    http = client(routes, seen)
    cache = DiscoveryCache(ttl_seconds=3600, clock=lambda: now[0])
    discover(BASE, http=http, cache=cache)
    now[0] = 3599
    discover(BASE, http=http, cache=cache)
    assert len(seen) == 1
    now[0] = 3600
    discover(BASE, http=http, cache=cache)
    assert len(seen) == 2


def test_relative_base_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        discover("ehr.example/fhir", http=client({}))


def test_sal05_auth_method_must_be_advertised() -> None:
    cfg = discover(BASE, http=client({f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=FULL)}))
    check_auth_method_supported(cfg, "private_key_jwt", "RS384")
    check_auth_method_supported(cfg, "none")
    with pytest.raises(ConfigurationError, match="client_secret_post"):
        check_auth_method_supported(cfg, "client_secret_post")
    with pytest.raises(ConfigurationError, match="RS256"):
        check_auth_method_supported(cfg, "private_key_jwt", "RS256")


def test_sal41_discovery_refuses_unlisted_base_before_network() -> None:
    seen: list[str] = []
    with pytest.raises(SecurityPolicyError):
        discover("https://evil.example/fhir", http=client({}, seen), allowlist=[BASE])
    assert seen == []
    routes = {f"{BASE}/.well-known/smart-configuration": httpx.Response(200, json=FULL)}
    assert discover(BASE, http=client(routes), allowlist=[BASE]).token_endpoint == FULL["token_endpoint"]


def test_sal01_the_configurations_held_stay_bounded_however_many_issuers_are_met() -> None:
    """A long-lived auth service discovering many FHIR bases holds at most ``DISCOVERY_CACHE_MAX_ENTRIES``
    configurations (least recently used dropped), and an expired one goes when another is stored even if never read
    again. Before, each was dropped only when its own base was read after the TTL: every issuer ever met stayed."""
    now = [0.0]
    seen: list[str] = []
    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: (seen.append(str(r.url)), httpx.Response(200, json=FULL))[1])
    )
    cache = DiscoveryCache(ttl_seconds=3600, clock=lambda: now[0])
    bases = [f"https://ehr{n}.example/fhir" for n in range(DISCOVERY_CACHE_MAX_ENTRIES + 50)]
    for base in bases:
        discover(base, http=http, cache=cache)
        discover(bases[0], http=http, cache=cache)  # read often: the most recently used
    assert len(cache) == DISCOVERY_CACHE_MAX_ENTRIES
    assert len(seen) == len(bases)
    discover(bases[0], http=http, cache=cache)
    discover(bases[-1], http=http, cache=cache)
    assert len(seen) == len(bases)  # both still held
    discover(bases[1], http=http, cache=cache)
    assert len(seen) == len(bases) + 1  # the least recently used went

    now[0] = 3600.0  # every entry expired: the next one stored drops them
    discover("https://other.example/fhir", http=http, cache=cache)
    assert len(cache) == 1


def test_sal01_a_default_cache_holds_a_configuration_one_hour_and_at_most_256_bases() -> None:
    """SAL-01's numbers as the row and AUTH_SERVICE.md state them: a cache built with its defaults (the vault's)
    keeps a configuration for 1 h and at most 256 FHIR bases; the auth service's TTL setting defaults to 1 h.
    The tests above pass their TTL and read the cap from the constant, so a changed default went unseen."""
    now = [0.0]
    seen: list[str] = []
    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: (seen.append(str(r.url)), httpx.Response(200, json=FULL))[1])
    )
    cache = DiscoveryCache(clock=lambda: now[0])
    bases = [f"https://ehr{n}.example/fhir" for n in range(257)]
    for base in bases:
        discover(base, http=http, cache=cache)
    assert len(cache) == 256
    now[0] = 3599.0
    discover(bases[-1], http=http, cache=cache)
    assert len(seen) == 257  # still held just short of an hour
    now[0] = 3600.0
    discover(bases[-1], http=http, cache=cache)
    assert len(seen) == 258  # fetched again after an hour
    assert Settings.model_fields["DISCOVERY_CACHE_TTL_SECONDS"].default == 3600


def test_sal04_only_the_smart_oauth_uris_extension_is_read() -> None:
    """SAL-04: the endpoints come from the extension whose URL ends in ``StructureDefinition/oauth-uris``; another
    extension whose URL merely ends in ``oauth-uris`` (a vendor's own) names no endpoint ehrsync will call."""
    decoy = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "mode": "server",
                "security": {
                    "extension": [
                        {
                            "url": "https://vendor.example/fhir/extension/legacy-oauth-uris",
                            "extension": [{"url": "token", "valueUri": "https://vendor.example/token"}],
                        }
                    ]
                },
            }
        ],
    }
    routes = {f"{BASE}/metadata": httpx.Response(200, json=decoy)}
    with pytest.raises(DiscoveryError, match="oauth-uris"):
        discover(BASE, http=client(routes))
