"""Configuration is validated at start: a missing or malformed key stops the service naming the variable."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from auth_service.core.config import load_settings
from auth_service.core.keys import build_jwks
from auth_service.services.context import build_context
from connectors.errors import ConfigurationError, ResponseTooLargeError
from connectors.smart import discover
from sandbox import SandboxServer
from tests.auth_service.keyutil import ec_pem, enc_key, rsa_pem


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "INTEGRATIONS_TOKEN_ENC_KEY",
        "EHR_JWT_PRIVATE_KEY",
        "EHR_JWT_KEY_ID",
        "SMART_ISSUER_ALLOWLIST",
        "DATABASE_URL",
        "EHRSYNC_DATABASE_URL",
        "EHRSYNC_STATE_DIR",
        "EHRSYNC_HOME",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", enc_key())
    monkeypatch.setenv("SMART_ISSUER_ALLOWLIST", "https://a.example/fhir, https://b.example/r4/")
    s = load_settings()
    assert s.LOG_REDACTION_ENABLED is True
    assert s.SMART_ENABLE_WRITE is False
    assert s.SMART_ISSUER_ALLOWLIST == ["https://a.example/fhir", "https://b.example/r4/"]
    # the one app-database default every ehrsync process shares (was var/auth_service/app.db here only)
    assert s.database_url == f"sqlite:///{Path('var/demo').resolve() / 'app.db'}"
    assert s.redirect_uri == "http://127.0.0.1:8000/api/integrations/smart/callback"


def test_missing_enc_key_names_the_variable_and_how_to_make_one() -> None:
    """As ``ehrsync sync`` and the pipelines say it: an operator starting the service alone learns the command."""
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY: Field required") as caught:
        load_settings()
    assert "generate one with `python -c" in str(caught.value) and "os.urandom(32)" in str(caught.value)


@pytest.mark.parametrize("bad", ["", "not base64 at all!!", "c2hvcnQ="])
def test_malformed_enc_key(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=bad)


def test_a_dagster_home_it_cannot_look_at_does_not_stop_the_service(tmp_path: Path) -> None:
    """The auth service never opens the Dagster home, but its settings check that ``DAGSTER_HOME`` is no file: one
    under a folder its user may not enter (a Dagster host's 0700 home, named in an environment file the services
    share) stopped its start with a bare ``PermissionError``. A name too long to look up stands for that here (the
    tests run as root, who may enter any folder): the check refuses a file and leaves what it cannot see to Dagster."""
    home = str(tmp_path / ("d" * 300) / "home")
    settings = load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), DAGSTER_HOME=home)
    assert home == settings.DAGSTER_HOME


def test_malformed_private_key_names_variable() -> None:
    with pytest.raises(ConfigurationError, match="EHR_JWT_PRIVATE_KEY is not a readable"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY="-----BEGIN junk", EHR_JWT_KEY_ID="k")


def test_private_key_path_missing() -> None:
    with pytest.raises(ConfigurationError, match="neither PEM text nor a path"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY="/nonexistent/key.pem")


def test_private_key_needs_kid() -> None:
    with pytest.raises(ConfigurationError, match="EHR_JWT_KEY_ID is required"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=rsa_pem())


@pytest.mark.parametrize("blank", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_private_key_with_a_blank_kid_needs_kid(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    """``EHR_JWT_KEY_ID="   "`` in a .env file is no kid: before, the JWKS and every assertion carried a kid of
    spaces that no EHR matches; now the start stops on the same one line as an unset kid."""
    monkeypatch.setenv("EHR_JWT_KEY_ID", blank)
    with pytest.raises(ConfigurationError, match="EHR_JWT_KEY_ID is required when EHR_JWT_PRIVATE_KEY is set"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=rsa_pem())


def test_kid_whitespace_is_stripped_where_it_is_published_and_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_JWT_KEY_ID", " k1 \t")
    s = load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), EHR_JWT_PRIVATE_KEY=ec_pem())
    key = s.signing_key()
    assert s.EHR_JWT_KEY_ID == "k1" and key is not None and key.kid == "k1"
    assert [k["kid"] for k in build_jwks(key, s.previous_public_keys())["keys"]] == ["k1"]


def test_blank_kid_without_a_private_key_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_JWT_KEY_ID", "  ")
    s = load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key())
    assert s.EHR_JWT_KEY_ID is None and s.signing_key() is None


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


@pytest.mark.parametrize("filler", [b"\x00", b"x"])
def test_placeholder_enc_key_is_refused(filler: bytes) -> None:
    """A 32-byte key of one repeated byte (``AAAA...=`` copied from an example) is a placeholder, not a key."""
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY: is a placeholder"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=base64.b64encode(filler * 32).decode())


def test_app_database_follows_the_state_dir_and_the_url_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", enc_key())
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    assert load_settings().database_url == f"sqlite:///{tmp_path.resolve() / 'app.db'}"
    monkeypatch.setenv("EHRSYNC_DATABASE_URL", "sqlite:///elsewhere.db")
    assert load_settings().database_url == "sqlite:///elsewhere.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/app")  # DATABASE_URL wins
    assert load_settings().database_url == "postgresql+psycopg://u@127.0.0.1/app"


@pytest.mark.parametrize(
    ("name", "bad", "says"),
    [
        ("EHRSYNC_MAX_RESPONSE_BYTES", "lots", "is not a whole number of at least 1 \\(bytes"),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "0.5", "is not a whole number of at least 1 \\(bytes"),
        ("EHRSYNC_MAX_RESPONSE_BYTES", "1e9", "is not a whole number"),  # was read as a float
        ("EHRSYNC_MAX_RESPONSE_BYTES", "1048576.5", "is not a whole number"),  # was cut to 1048576
        ("EHRSYNC_REQUEST_DEADLINE_S", "-3", "greater than 0"),
        ("EHRSYNC_REQUEST_DEADLINE_S", "inf", "finite number"),
    ],
)
def test_request_bounds_are_checked_at_start(monkeypatch: pytest.MonkeyPatch, name: str, bad: str, says: str) -> None:
    """Every SMART discovery and token call of the service reads these; a bad value stops the start, naming it."""
    monkeypatch.setenv(name, bad)
    with pytest.raises(ConfigurationError, match=f"{name}: .*{says}"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key())
    monkeypatch.setenv(name, "2048")
    assert getattr(load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key()), name) == "2048"


def test_the_services_smart_calls_keep_to_the_bounds_read_at_start(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's HTTP client carries the limits its settings read at start; a discovery document past them
    fails at that limit, whatever the environment says later (before, each call re-read the environment)."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", "1048576")
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    ctx = build_context(load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key()))
    try:
        monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(300 * 1024 * 1024))  # after start: not read
        sandbox.admin.set_fault("huge_body", path="/fhir/.well-known/smart-configuration")
        with pytest.raises(ResponseTooLargeError, match="1048576-byte response limit"):
            discover(sandbox.fhir_base, http=ctx.http)
    finally:
        ctx.close()


@pytest.mark.parametrize("name", ["WAREHOUSE_READ_WAIT_SECONDS", "EHR_CALL_BUDGET_WAIT_SECONDS"])
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_wait_that_is_not_finite_is_named_so(monkeypatch: pytest.MonkeyPatch, name: str, bad: str) -> None:
    """``nan`` was told "should be less than or equal to 30" (it is not a number to compare)."""
    monkeypatch.setenv(name, bad)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key())
    assert f"{name}: Input should be a finite number" in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("url", "named"),
    [("mysql://h/wh", "scheme 'mysql' is not supported"), ("duckdb:///", "names no file"), ("{tmp}", "is a folder")],
)
def test_a_warehouse_url_it_cannot_open_stops_the_service(tmp_path: Path, url: str, named: str) -> None:
    """As the pipelines check it before a run: else every resources API call answered 503 "retry later"."""
    with pytest.raises(ConfigurationError, match=f"WAREHOUSE_URL.*{named}"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), WAREHOUSE_URL=url.format(tmp=tmp_path))


def test_warehouse_urls_it_can_open_are_accepted(tmp_path: Path) -> None:
    for url in ("", str(tmp_path / "wh.duckdb"), f"duckdb:///{tmp_path}/wh.duckdb", "postgresql+psycopg://u@h/wh"):
        assert url == load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), WAREHOUSE_URL=url).WAREHOUSE_URL


def test_a_warehouse_path_the_system_cannot_look_at_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A name longer than the file system allows: the start-up check's probe raised a bare OSError (a traceback
    from ``ehrsync auth serve``, ``seed`` and ``bootstrap``) instead of a message naming WAREHOUSE_URL."""
    url = str(tmp_path / ("w" * 300) / "wh.duckdb")
    with pytest.raises(ConfigurationError, match=r"WAREHOUSE_URL.*cannot be looked at.*too long"):
        load_settings(INTEGRATIONS_TOKEN_ENC_KEY=enc_key(), WAREHOUSE_URL=url)
