"""Discovery leniency (SAL-02, SAL-04) against the sandbox: a smart-configuration that lacks a field ehrsync
needs is completed from the CapabilityStatement's oauth-uris extension, with a warning, not refused."""

from __future__ import annotations

import logging

import httpx
import pytest

from connectors.errors import DiscoveryError
from connectors.smart import discover
from connectors.smart.configuration import parse_capability_statement, parse_smart_configuration
from sandbox import SandboxServer

SERVER_ROOT_SUFFIX = "/fhir"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
BASE = "https://ehr.example.org/fhir"


def _complete_file() -> dict[str, object]:
    """A SMART configuration file of ``BASE`` with every field SMART 2.0 requires (a fresh copy each call)."""
    return {
        "authorization_endpoint": BASE + "/authorize",
        "token_endpoint": BASE + "/token",
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-standalone"],
    }


@pytest.mark.parametrize(
    "dropped",
    [
        ["grant_types_supported"],
        ["capabilities"],
        ["token_endpoint"],
        ["authorization_endpoint"],
        ["token_endpoint", "authorization_endpoint", "grant_types_supported", "capabilities"],
    ],
)
def test_sal02_sal04_missing_field_falls_back_to_oauth_uris(
    sandbox: SandboxServer, dropped: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.admin.settings(drop_smart_fields=dropped)
    root = sandbox.fhir_base.removesuffix(SERVER_ROOT_SUFFIX)
    with httpx.Client(timeout=10) as http, caplog.at_level(logging.WARNING, logger="connectors.smart.discovery"):
        cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.token_endpoint == root + "/oauth/token"
    assert cfg.require_user_launch() == root + "/oauth/authorize"
    assert cfg.revocation_endpoint == root + "/oauth/revoke"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falling back to the CapabilityStatement" in m and dropped[0] in m for m in warned), warned
    if "grant_types_supported" in dropped:
        assert "authorization_code" in cfg.grant_types_supported
    # fields the well-known file still has are kept from it
    if "token_endpoint_auth_methods_supported" not in dropped:
        assert "private_key_jwt" in cfg.token_endpoint_auth_methods_supported


def test_sal02_complete_document_needs_no_metadata(sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    with httpx.Client(timeout=10) as http, caplog.at_level(logging.WARNING, logger="connectors.smart.discovery"):
        cfg = discover(sandbox.fhir_base, http=http)
    assert not cfg.smart_v1 and "oauth-uris-fallback" not in cfg.raw
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("profile", "dropped", "smart_v1"),
    [
        ("v1_well_known", [], True),  # SMART 1.0's file: 1.0 capabilities, no grant types, no PKCE methods
        ("v2", ["grant_types_supported"], False),  # a 2.x file lacking a field it requires: it says permission-v2
    ],
)
def test_sal03_sal04_a_document_without_grant_types_is_smart_1_unless_it_says_permission_v2(
    sandbox: SandboxServer, profile: str, dropped: list[str], smart_v1: bool
) -> None:
    """SMART 2.0 made ``grant_types_supported`` and ``code_challenge_methods_supported`` required; a file without
    the first and without the 2.0 capability ``permission-v2`` is a 1.0 server's: v1 as SAL-04's are (v1 scopes, no
    S256 advertised needed; ehrsync still sends S256). Before, its ``capabilities`` made it 2.x: launch refused."""
    sandbox.admin.settings(profile=profile, drop_smart_fields=dropped)
    with httpx.Client(timeout=10) as http:
        cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.smart_v1 is smart_v1 and cfg.v1_scopes_only is smart_v1
    assert cfg.require_user_launch() == sandbox.fhir_base.removesuffix(SERVER_ROOT_SUFFIX) + "/oauth/authorize"


@pytest.mark.parametrize(
    ("kept", "smart_v1"),
    [
        ({}, True),  # 1.0's shape: none of what 2.0 requires
        ({"code_challenge_methods_supported": ["S256"]}, False),  # 2.x without grant types nor permission-v*
        ({"grant_types_supported": ["authorization_code"]}, False),
    ],
)
def test_sal04_sal20_one_field_only_2_0_requires_keeps_a_file_2_x(kept: dict[str, list[str]], smart_v1: bool) -> None:
    """Servers in the wild leave out ``grant_types_supported`` or the ``permission-v*`` codes: a file naming
    ``code_challenge_methods_supported`` (or grant types) is a 2.x server's, asked in v2 scopes as its plugin says,
    not taken for 1.0 (which would drop the granular scopes, e.g. Epic's Observation categories)."""
    base = BASE
    complete = _complete_file()
    fallback = parse_smart_configuration(base, complete)  # what the CapabilityStatement fills in
    payload = {"token_endpoint": base + "/token", "capabilities": ["launch-standalone", "client-public"], **kept}
    cfg = parse_smart_configuration(base, payload, fallback=fallback)
    assert cfg.smart_v1 is smart_v1 and cfg.v1_scopes_only is smart_v1


@pytest.mark.parametrize(
    "blank",
    [
        ["revocation_endpoint", "introspection_endpoint", "management_endpoint"],
        ["registration_endpoint"],
        ["issuer", "jwks_uri"],
        ["token_endpoint"],
        ["authorization_endpoint"],
    ],
)
def test_sal02_a_field_written_as_an_empty_string_is_absent(
    sandbox: SandboxServer, blank: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A templated smart-configuration may write what is not set up as "". That is no endpoint: an optional one is
    left out (with a warning), as an unusable one is, and a needed one is completed from the CapabilityStatement, as
    a missing one is. Before, "" failed discovery (``must be a non-empty string``), so every launch and refresh at
    that server failed, even where the CapabilityStatement had been fetched to fill the gap."""
    sandbox.admin.settings(blank_smart_fields=blank)
    root = sandbox.fhir_base.removesuffix(SERVER_ROOT_SUFFIX)
    with httpx.Client(timeout=10) as http, caplog.at_level(logging.WARNING, logger="connectors.smart"):
        cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.token_endpoint == root + "/oauth/token"
    assert cfg.require_user_launch() == root + "/oauth/authorize"
    for field in blank:
        if field not in ("token_endpoint", "authorization_endpoint"):
            assert getattr(cfg, field) is None, field
    assert not cfg.smart_v1 and "S256" in cfg.code_challenge_methods_supported
    assert blank[0] in caplog.text


@pytest.mark.parametrize(
    ("profile", "nulled", "smart_v1"),
    [
        ("v1_well_known", ["grant_types_supported", "code_challenge_methods_supported"], True),
        ("v1_well_known", ["code_challenge_methods_supported"], True),
        ("v1_well_known", ["capabilities"], True),
        ("v2", ["grant_types_supported"], False),  # it says permission-v2 and S256: 2.x still
    ],
)
def test_sal02_sal04_a_field_written_as_null_is_absent(
    sandbox: SandboxServer, profile: str, nulled: list[str], smart_v1: bool
) -> None:
    """A server serialising its whole configuration object writes the fields it does not set as ``null``: a SMART
    1.0 server so writes the 2.0 fields. ``null`` names nothing: a required field so written is completed from the
    CapabilityStatement as a missing one is, and it marks no 2.0 server. Before, a ``null``
    ``grant_types_supported`` counted as present (no CapabilityStatement read) and a ``null``
    ``code_challenge_methods_supported`` as a 2.0 mark: the 1.0 server was taken for 2.x, every patient launch
    refused ('lacks S256') and v2 scopes would have been asked."""
    sandbox.admin.settings(profile=profile, null_smart_fields=nulled)
    with httpx.Client(timeout=10) as http:
        cfg = discover(sandbox.fhir_base, http=http)
    assert cfg.smart_v1 is smart_v1 and cfg.v1_scopes_only is smart_v1
    assert cfg.require_user_launch() == sandbox.fhir_base.removesuffix(SERVER_ROOT_SUFFIX) + "/oauth/authorize"
    assert "authorization_code" in cfg.grant_types_supported


def test_sal02_every_field_the_server_publishes_is_read(sandbox: SandboxServer) -> None:
    """SAL-02: the optional fields a server publishes are read, ``scopes_supported`` included, not only the
    endpoints the launch uses."""
    root = sandbox.fhir_base.removesuffix(SERVER_ROOT_SUFFIX)
    with httpx.Client(timeout=10) as http:
        cfg = discover(sandbox.fhir_base, http=http)
    assert "patient/*.rs" in cfg.scopes_supported and "offline_access" in cfg.scopes_supported
    assert cfg.token_endpoint_auth_methods_supported[:2] == ("client_secret_basic", "private_key_jwt")
    assert "RS384" in cfg.token_endpoint_auth_signing_alg_values_supported
    assert (cfg.revocation_endpoint, cfg.introspection_endpoint) == (root + "/oauth/revoke", root + "/oauth/introspect")
    assert cfg.issuer == sandbox.fhir_base and cfg.jwks_uri
    assert "launch-standalone" in cfg.capabilities and "client_credentials" in cfg.grant_types_supported


@pytest.mark.parametrize("missing", ["capabilities", "grant_types_supported", "authorization_endpoint"])
def test_sal02_a_required_field_neither_the_file_nor_the_capability_statement_gives_is_a_discovery_error(
    missing: str,
) -> None:
    """SAL-02 (never guess): a required field the document lacks, with no CapabilityStatement to complete it, or
    one whose oauth-uris lack it too (a user-launch server without an ``authorize`` URI), is a ``DiscoveryError``
    naming it; discovery refuses the server rather than return a configuration without it."""
    base = BASE
    complete = _complete_file()
    payload = {k: v for k, v in complete.items() if k != missing}
    with pytest.raises(DiscoveryError, match=missing):
        parse_smart_configuration(base, payload)
    if missing == "authorization_endpoint":
        token_only = {
            "resourceType": "CapabilityStatement",
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": base + "/token"}]}]
                    },
                }
            ],
        }
        with pytest.raises(DiscoveryError, match=missing):
            parse_smart_configuration(base, payload, fallback=parse_capability_statement(base, token_only))
