"""Authorize URL (SAL-07, SAL-08, SAL-10), PKCE (SAL-11) and issuer allow-listing (SAL-06)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.errors import ConfigurationError, DiscoveryError, SecurityPolicyError
from connectors.smart import (
    SmartConfiguration,
    build_authorize_url,
    code_challenge_for,
    is_issuer_allowed,
    new_pkce,
    require_issuer_allowed,
)

CFG = SmartConfiguration(
    fhir_base="https://ehr.example/fhir/",
    token_endpoint="https://ehr.example/token",
    authorization_endpoint="https://ehr.example/authorize?tenant=t1",
    code_challenge_methods_supported=("S256",),
)


def _params(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_sal08_all_parameters_present_and_aud_exact() -> None:
    pkce = new_pkce()
    url = build_authorize_url(
        CFG,
        client_id="app",
        redirect_uri="https://app.example/cb",
        scope="launch/patient openid fhirUser patient/Observation.rs",
        state="st",
        aud="https://ehr.example/fhir/",
        code_challenge=pkce.challenge,
        nonce="n1",
    )
    assert url.startswith("https://ehr.example/authorize?")
    p = _params(url)
    assert p["response_type"] == ["code"]
    assert p["client_id"] == ["app"]
    assert p["redirect_uri"] == ["https://app.example/cb"]
    assert p["scope"] == ["launch/patient openid fhirUser patient/Observation.rs"]
    assert p["state"] == ["st"]
    assert p["aud"] == ["https://ehr.example/fhir/"]  # SAL-10: trailing slash kept
    assert p["code_challenge"] == [pkce.challenge]
    assert p["code_challenge_method"] == ["S256"]
    assert p["nonce"] == ["n1"]
    assert p["tenant"] == ["t1"]  # existing endpoint query kept
    assert "launch" not in p  # SAL-07: standalone launch


def test_sal06_ehr_launch_adds_launch() -> None:
    url = build_authorize_url(
        CFG,
        client_id="app",
        redirect_uri="https://app.example/cb",
        scope="launch openid",
        state="st",
        aud=CFG.fhir_base,
        code_challenge=new_pkce().challenge,
        launch="opaque-launch",
    )
    assert _params(url)["launch"] == ["opaque-launch"]


def test_sal08_empty_required_parameter_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="state"):
        build_authorize_url(
            CFG, client_id="a", redirect_uri="https://x/cb", scope="s", state="", aud="a", code_challenge="c"
        )


def test_sal03_authorize_refused_without_s256() -> None:
    legacy = SmartConfiguration(fhir_base="https://e/fhir", token_endpoint="t", authorization_endpoint="https://e/a")
    with pytest.raises(DiscoveryError):
        build_authorize_url(
            legacy, client_id="a", redirect_uri="https://x/cb", scope="s", state="s", aud="a", code_challenge="c"
        )


def test_sal11_pkce_verifier_and_challenge() -> None:
    pairs = [new_pkce() for _ in range(20)]
    assert len({p.verifier for p in pairs}) == 20
    for pair in pairs:
        assert 43 <= len(pair.verifier) <= 128
        assert set(pair.verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        digest = hashlib.sha256(pair.verifier.encode()).digest()
        assert pair.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert "=" not in pair.challenge
        assert pair.verifier not in repr(pair)


def test_sal11_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge_for(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "!"])
def test_sal11_bad_verifier_rejected(verifier: str) -> None:
    with pytest.raises(ValueError, match="43-128"):
        code_challenge_for(verifier)


@pytest.mark.parametrize(
    ("iss", "allowed"),
    [
        ("https://ehr.example/fhir", True),
        ("HTTPS://EHR.Example/fhir", True),  # scheme/host case only
        ("https://ehr.example/FHIR", False),  # path is case-sensitive
        ("https://ehr.example/fhir/", False),  # trailing slash matters
        ("https://ehr.example:8443/fhir", False),
        ("https://evil.example/fhir", False),
        ("https://ehr.example.evil.example/fhir", False),
        ("javascript:alert(1)", False),
        ("", False),
    ],
)
def test_sal06_issuer_allow_list_exact_match(iss: str, allowed: bool) -> None:
    assert is_issuer_allowed(iss, ["https://ehr.example/fhir"]) is allowed


def test_sal06_require_issuer_raises_security_policy_error() -> None:
    with pytest.raises(SecurityPolicyError):
        require_issuer_allowed("https://evil.example/fhir", ["https://ehr.example/fhir"])
