"""Pure pieces: redaction (SAL-38), signed connect links, scope wording, JWKS building (SAL-30)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from auth_service.core.keys import SigningKey, build_jwks, load_private_key, parse_previous_keys, public_jwk
from auth_service.core.links import InvalidLinkError, LinkSigner
from auth_service.core.redaction import RedactionFilter, redact
from auth_service.pages.scope_text import describe_scopes
from tests.auth_service.keyutil import ec_pem, rsa_pem


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ('GET /api/integrations/smart/callback?code=abc123&state=xyz789 HTTP/1.1" 302', "abc123"),
        ("GET /cb?state=xyz789&code=abc123", "xyz789"),
        ("form access_token=tok.en.value&x=1", "tok.en.value"),
        ('{"refresh_token": "rt-secret", "ok": 1}', "rt-secret"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("assertion eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJ4In0.sig-part", "eyJhbGciOiJSUzM4NCJ9"),
        ("/connect?link=payload.signature", "payload.signature"),
    ],
)
def test_redact_sal38(raw: str, secret: str) -> None:
    assert secret not in redact(raw)
    assert "[REDACTED]" in redact(raw)


def test_redact_keeps_harmless_text() -> None:
    assert redact("status_code=200 error_code=x connection=c1") == "status_code=200 error_code=x connection=c1"


def test_filter_rewrites_args_and_exceptions() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("GET /cb?code=SECRET1", 302), None)
    try:
        raise ValueError("bad token access_token=SECRET2")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert RedactionFilter().filter(record)
    assert "SECRET1" not in record.getMessage()
    assert record.getMessage().endswith(" 302")
    assert record.exc_text is not None and "SECRET2" not in record.exc_text


def test_link_roundtrip_and_tamper() -> None:
    signer = LinkSigner(b"k" * 32)
    token = signer.sign("t1", "user-7", ttl_seconds=60, now=1000)
    claims = signer.verify(token, now=1030)
    assert (claims.tenant_id, claims.user_ref) == ("t1", "user-7")
    with pytest.raises(InvalidLinkError, match="expired"):
        signer.verify(token, now=1061)
    payload, sig = token.split(".")
    with pytest.raises(InvalidLinkError, match="signature"):
        signer.verify(payload[:-1] + ("x" if payload[-1] != "x" else "y") + "." + sig, now=1000)
    with pytest.raises(InvalidLinkError, match="signature"):
        LinkSigner(b"other" * 8).verify(token, now=1000)
    with pytest.raises(InvalidLinkError, match="malformed"):
        signer.verify("nodot", now=1000)


def test_describe_scopes_plain_words() -> None:
    lines = describe_scopes("launch/patient openid fhirUser offline_access patient/Observation.rs patient/*.read")
    assert lines == [
        "Confirm who you are",
        "Keep your record up to date until you disconnect",
        "Read test results and vital signs",
        "Read your whole health record",
    ]
    assert describe_scopes("patient/DocumentReference.c") == ["Add to clinical notes and documents"]


def test_jwks_rotation_sal30() -> None:
    current = SigningKey(load_private_key(ec_pem()), "new")
    old = SigningKey(load_private_key(rsa_pem()), "old")
    previous = parse_previous_keys(json.dumps({"keys": [public_jwk(old.key, "old")]}))
    jwks = build_jwks(current, previous)
    assert [k["kid"] for k in jwks["keys"]] == ["new", "old"]
    assert jwks["keys"][0]["alg"] == "ES384" and jwks["keys"][1]["alg"] == "RS384"
    for jwk in jwks["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)
