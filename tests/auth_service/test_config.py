"""Configuration is validated at start: a missing or malformed key stops the service naming the variable."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from auth_service.core.config import load_settings
from connectors.errors import ConfigurationError
from tests.auth_service.keyutil import ec_pem, enc_key, rsa_pem


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INTEGRATIONS_TOKEN_ENC_KEY", "EHR_JWT_PRIVATE_KEY", "EHR_JWT_KEY_ID", "SMART_ISSUER_ALLOWLIST"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", enc_key())
    monkeypatch.setenv("SMART_ISSUER_ALLOWLIST", "https://a.example/fhir, https://b.example/r4/")
    s = load_settings()
    assert s.LOG_REDACTION_ENABLED is True
    assert s.SMART_ENABLE_WRITE is False
    assert s.SMART_ISSUER_ALLOWLIST == ["https://a.example/fhir", "https://b.example/r4/"]
    assert s.DATABASE_URL.startswith("sqlite:///var/")
    assert s.redirect_uri == "http://127.0.0.1:8000/api/integrations/smart/callback"


def test_missing_enc_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY: Field required"):
        load_settings()


@pytest.mark.parametrize("bad", ["", "not base64 at all!!", "c2hvcnQ="])
def test_malformed_enc_key(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=bad)


def test_malformed_private_key_names_variable() -> None:
    with pytest.raises(ConfigurationError, match="EHR_JWT_PRIVATE_KEY is not a readable"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY="-----BEGIN junk", EHR_JWT_KEY_ID="k")


def test_private_key_path_missing() -> None:
    with pytest.raises(ConfigurationError, match="neither PEM text nor a path"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY="/nonexistent/key.pem")


def test_private_key_needs_kid() -> None:
    with pytest.raises(ConfigurationError, match="EHR_JWT_KEY_ID is required"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=rsa_pem())


def test_wrong_curve_refused() -> None:
    with pytest.raises(ConfigurationError, match="P-384"):
        load_settings(
            INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=ec_pem(ec.SECP256R1()), EHR_JWT_KEY_ID="k"
        )


def test_small_rsa_refused() -> None:
    with pytest.raises(ConfigurationError, match="2048"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=rsa_pem(1024), EHR_JWT_KEY_ID="k")


def test_private_key_from_file(tmp_path) -> None:
    path = tmp_path / "key.pem"
    path.write_text(ec_pem())
    s = load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=str(path), EHR_JWT_KEY_ID="k1")
    assert s.EHR_JWT_KEY_ID == "k1"


def test_previous_keys_with_private_members_refused() -> None:
    with pytest.raises(ConfigurationError, match="private key members"):
        load_settings(
            INTEGRATIONS_TOKEN_ENC_KEY=enc_key(),
            EHR_JWT_PREVIOUS_PUBLIC_KEYS='{"keys": [{"kid": "old", "kty": "RSA", "n": "x", "e": "AQAB", "d": "s"}]}',
        )


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("SMART_ISSUER_ALLOWLIST", "ftp://x", "SMART_ISSUER_ALLOWLIST"),
        ("APP_BASE_URL", "example.com", "APP_BASE_URL"),
        ("SMART_DEFAULT_SCOPES", "   ", "SMART_DEFAULT_SCOPES"),
    ],
)
def test_other_bad_values_named(name: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), **{name: value})


def test_error_never_echoes_the_secret() -> None:
    secret = "c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0"
    with pytest.raises(ConfigurationError) as info:
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=secret)
    assert secret not in str(info.value)
