"""Token endpoint grants and client auth (SAL-14..16, SAL-23, SAL-27..29, SAL-32, SAL-36)."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.errors import (
    AccessDeniedError,
    ConfigurationError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuthError,
    TemporarilyUnavailableError,
    TransportError,
    UnauthorizedClientError,
)
from connectors.smart import (
    CLIENT_ASSERTION_TYPE,
    ClientAuth,
    JwtClientAuth,
    PublicClientAuth,
    SecretClientAuth,
    TokenResponse,
    build_client_assertion,
    client_credentials_grant,
    exchange_code,
    refresh_grant,
)
from connectors.smart.token import MAX_EXPIRES_IN
from tests.connectors.smart.keys import ec_key, pem, public_jwk, rsa_key

TOKEN_URL = "https://ehr.example/oauth2/token"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class Recorder:
    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def form(self, i: int = 0) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.requests[i].content.decode()).items()}


def ok(body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


def exchange(
    rec: Recorder, client_auth: ClientAuth, *, code: str = "C", redirect_uri: str = "https://a/cb"
) -> TokenResponse:
    """The authorization-code grant through ``rec``, with a 43-character verifier and the clock at ``NOW``."""
    return exchange_code(
        TOKEN_URL,
        http=rec.client(),
        client_auth=client_auth,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier="v" * 43,
        clock=lambda: NOW,
    )


BASIC_BODY = {"access_token": "AT", "token_type": "Bearer", "expires_in": 3600, "scope": "patient/*.rs"}


def test_sal14_sal27_public_code_exchange_form_encoded_with_client_id() -> None:
    rec = Recorder(ok(BASIC_BODY))
    tr = exchange(rec, PublicClientAuth("my app"), code="CODE", redirect_uri="https://app.example/cb")
    req = rec.requests[0]
    assert req.method == "POST"
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in req.headers
    assert rec.form() == {
        "grant_type": "authorization_code",
        "code": "CODE",
        "redirect_uri": "https://app.example/cb",
        "code_verifier": "v" * 43,
        "client_id": "my app",
    }
    assert tr.access_token == "AT" and tr.expires_at == NOW + timedelta(seconds=3600)


def test_sal28_basic_auth_urlencodes_each_part() -> None:
    rec = Recorder(ok(BASIC_BODY))
    exchange(rec, SecretClientAuth("client:id é", "s3cr+t/=&:"))
    header = rec.requests[0].headers["Authorization"]
    assert header.startswith("Basic ")
    raw = base64.b64decode(header[6:]).decode()
    user, _, password = raw.partition(":")
    assert "%3A" in user and ":" not in password  # both parts urlencoded before base64
    assert unquote(user) == "client:id é" and unquote(password) == "s3cr+t/=&:"
    assert "client_id" not in rec.form() and "client_secret" not in rec.form()


def test_sal28_secret_not_in_repr() -> None:
    assert "s3cr" not in repr(SecretClientAuth("c", "s3cr"))


@pytest.mark.parametrize(("alg", "key"), [("RS384", rsa_key()), ("ES384", ec_key())])
def test_sal29_assertion_header_and_claims(alg: str, key: Any) -> None:
    rec = Recorder(ok(BASIC_BODY), ok(BASIC_BODY))
    auth = JwtClientAuth("cid", pem(key), kid="k1", alg=alg, jku="https://app.example/jwks")
    for _ in range(2):
        client_credentials_grant(TOKEN_URL, http=rec.client(), client_auth=auth, scope="system/*.rs")
    assertions = [rec.form(i)["client_assertion"] for i in range(2)]
    for i, assertion in enumerate(assertions):
        assert rec.form(i)["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        assert rec.form(i)["grant_type"] == "client_credentials"
        assert rec.form(i)["scope"] == "system/*.rs"
        header = jwt.get_unverified_header(assertion)
        assert header == {"alg": alg, "kid": "k1", "typ": "JWT", "jku": "https://app.example/jwks"}
        pub = jwt.PyJWK(public_jwk(key, "k1", alg))
        claims = jwt.decode(assertion, pub, algorithms=[alg], audience=TOKEN_URL)
        assert claims["iss"] == claims["sub"] == "cid"
        assert claims["aud"] == TOKEN_URL
        assert claims["exp"] <= time.time() + 300
        assert uuid.UUID(claims["jti"]).version == 4
    jtis = {jwt.decode(a, options={"verify_signature": False})["jti"] for a in assertions}
    assert len(jtis) == 2  # new assertion per request


def test_sal29_kid_required_and_alg_must_fit_key() -> None:
    with pytest.raises(ConfigurationError, match="kid"):
        build_client_assertion(client_id="c", audience=TOKEN_URL, private_key=rsa_key(), kid="")
    with pytest.raises(ConfigurationError, match="RS384 needs an RSA"):
        JwtClientAuth("c", ec_key(), kid="k", alg="RS384")
    with pytest.raises(ConfigurationError, match="alg"):
        JwtClientAuth("c", rsa_key(), kid="k", alg="HS256")
    with pytest.raises(ConfigurationError, match="PEM"):
        JwtClientAuth("c", "-----BEGIN nonsense", kid="k")
    with pytest.raises(ConfigurationError, match="lifetime"):
        build_client_assertion(client_id="c", audience=TOKEN_URL, private_key=rsa_key(), kid="k", lifetime_s=301)


def test_sal29_an_ec_key_on_another_curve_is_refused_for_es384_by_name() -> None:
    """ES384 signs with P-384 only: a P-256 key is a configuration error naming the curve, not PyJWT's
    ``InvalidKeyError`` when the first assertion is signed."""
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigurationError, match="ES384 needs an EC P-384"):
        JwtClientAuth("c", p256, kid="k", alg="ES384")
    with pytest.raises(ConfigurationError, match="ES384 needs an EC P-384"):
        build_client_assertion(client_id="c", audience=TOKEN_URL, private_key=pem(p256), kid="k", alg="ES384")


def test_sal23_refresh_grant_form_and_optional_scope() -> None:
    rec = Recorder(ok(BASIC_BODY), ok(BASIC_BODY))
    refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT")
    refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT", scope="a b")
    assert rec.form(0) == {"grant_type": "refresh_token", "refresh_token": "RT", "client_id": "c"}
    assert rec.form(1)["scope"] == "a b"


def test_sal15_sal16_response_fields_defaults_and_extras() -> None:
    body = {
        "access_token": "AT",
        "token_type": "bEaReR",
        "refresh_token": "RT",
        "id_token": "IDT",
        "patient": "p1",
        "encounter": "e1",
        "need_patient_banner": True,
        "smart_style_url": "https://ehr/style.json",
        "intent": "reconcile",
        "tenant": "t9",
        "fhirContext": ["DiagnosticReport/7", {"reference": "Encounter/1", "role": "launch"}],
        "vendor_field": {"x": 1},
    }
    rec = Recorder(ok(body))
    tr = exchange(rec, PublicClientAuth("c"))
    assert tr.token_type == "Bearer"
    assert tr.expires_in == 300  # SAL-15 default
    assert tr.expires_at == NOW + timedelta(seconds=300)
    assert tr.scope is None
    assert tr.fhir_context == ({"reference": "DiagnosticReport/7"}, {"reference": "Encounter/1", "role": "launch"})
    assert tr.extra == {"vendor_field": {"x": 1}}
    assert (tr.patient, tr.encounter, tr.intent, tr.tenant) == ("p1", "e1", "reconcile", "t9")
    assert tr.need_patient_banner is True
    assert "AT" not in repr(tr) and "RT" not in repr(tr)
    assert tr.launch_context()["fhirContext"][0] == {"reference": "DiagnosticReport/7"}


def test_sal15_expires_at_from_server_date_header() -> None:
    server_date = NOW - timedelta(seconds=20)
    rec = Recorder(ok(BASIC_BODY, Date=server_date.strftime("%a, %d %b %Y %H:%M:%S GMT")))
    tr = refresh_grant(
        TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT", clock=lambda: NOW
    )
    assert tr.issued_at == server_date
    assert tr.expires_at == server_date + timedelta(seconds=3600)


def test_sal15_wildly_wrong_server_date_falls_back_to_local_clock() -> None:
    rec = Recorder(ok(BASIC_BODY, Date="Mon, 01 Jan 2001 00:00:00 GMT"))
    tr = refresh_grant(
        TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT", clock=lambda: NOW
    )
    assert tr.issued_at == NOW


@pytest.mark.parametrize(
    "date",
    [
        "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",  # a year past any C long: an OverflowError lost the tokens
        "Wed, 21 Oct 2015 07:28:00 +9999",
        "Wed, 21 Oct",
        "not a date",
    ],
)
def test_sal15_an_impossible_server_date_falls_back_to_local_clock(date: str) -> None:
    """The tokens the EHR issued are kept whatever its ``Date`` header says (read by the shared HTTP-date parser)."""
    rec = Recorder(ok(BASIC_BODY, Date=date))
    tr = refresh_grant(
        TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT", clock=lambda: NOW
    )
    assert tr.issued_at == NOW and tr.expires_at == NOW + timedelta(seconds=3600)


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer"},
        {"access_token": "AT", "token_type": "DPoP"},
        {"access_token": "AT"},
        {"access_token": "AT", "token_type": "Bearer", "expires_in": "soon"},
        {"access_token": "AT", "token_type": "Bearer", "patient": {"id": "1"}},
    ],
    ids=["no-access-token", "dpop", "no-token-type", "bad-expires", "bad-patient"],
)
def test_sal15_malformed_success_body_is_an_oauth_error(body: dict[str, Any]) -> None:
    rec = Recorder(ok(body))
    with pytest.raises(OAuthError) as info:
        refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT")
    assert "AT" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (400, "invalid_grant", InvalidGrantError),
        (401, "invalid_client", InvalidClientError),
        (400, "invalid_scope", InvalidScopeError),
        (400, "invalid_request", InvalidRequestError),
        (400, "unauthorized_client", UnauthorizedClientError),
        (400, "access_denied", AccessDeniedError),
        (503, "temporarily_unavailable", TemporarilyUnavailableError),
        (500, "server_error", TemporarilyUnavailableError),
    ],
)
def test_sal36_typed_errors_carry_fields(status: int, error: str, cls: type[OAuthError]) -> None:
    body = {"error": error, "error_description": "<b>nope</b>", "error_uri": "https://e/err"}
    rec = Recorder(httpx.Response(status, json=body))
    with pytest.raises(cls) as info:
        refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT-SECRET")
    assert info.value.status == status
    assert info.value.error_uri == "https://e/err"
    assert "RT-SECRET" not in str(info.value)


@pytest.mark.parametrize("status", [502, 504, 429])
def test_sal36_5xx_without_body_is_temporarily_unavailable(status: int) -> None:
    rec = Recorder(httpx.Response(status, content=b"<html>bad gateway</html>"))
    with pytest.raises(TemporarilyUnavailableError):
        refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT")


def test_timeout_is_a_transport_error() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    http = httpx.Client(transport=httpx.MockTransport(boom))
    with pytest.raises(TransportError):
        refresh_grant(TOKEN_URL, http=http, client_auth=PublicClientAuth("c"), refresh_token="RT")


@pytest.mark.parametrize("value", [1e12, 10**30, "99999999999999999999"], ids=["1e12", "10**30", "huge-string"])
def test_sal15_absurdly_long_expires_in_is_capped_not_a_crash(value: Any) -> None:
    """A server answering a lifetime beyond the calendar (some send a 'never expires' sentinel) used to raise a
    bare OverflowError out of the grant, after a rotating server had already spent the old refresh token; the
    lifetime is capped instead (a 401 still triggers a refresh) and the tokens are kept."""
    body = {"access_token": "AT", "token_type": "Bearer", "refresh_token": "RT2", "expires_in": value}
    tr = refresh_grant(
        TOKEN_URL,
        http=Recorder(ok(body)).client(),
        client_auth=PublicClientAuth("c"),
        refresh_token="RT",
        clock=lambda: NOW,
    )
    assert tr.refresh_token == "RT2"
    assert tr.expires_in == MAX_EXPIRES_IN
    assert tr.expires_at == NOW + timedelta(seconds=MAX_EXPIRES_IN)


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_sal15_non_finite_expires_in_is_an_oauth_error(value: str) -> None:
    body = {"access_token": "AT", "token_type": "Bearer", "expires_in": value}
    with pytest.raises(OAuthError, match="expires_in"):
        refresh_grant(
            TOKEN_URL, http=Recorder(ok(body)).client(), client_auth=PublicClientAuth("c"), refresh_token="RT"
        )


def test_sal15_a_refresh_answer_with_a_bad_optional_field_keeps_its_rotated_refresh_token() -> None:
    """An optional field of the wrong type that decides nothing (tenant, style, intent, fhirContext) is
    dropped with a warning: refusing the answer threw away the rotated refresh token it carried, and the next refresh
    (with the old, spent one) ended in ``invalid_grant`` and a re-authorization. A numeric patient id is its text."""
    body = {
        "access_token": "AT",
        "token_type": "Bearer",
        "refresh_token": "RT-2",
        "tenant": 5,
        "smart_style_url": ["x"],
        "intent": {},
        "scope": ["patient/Observation.rs", "offline_access"],
        "fhirContext": [{"reference": "Encounter/1"}, 7],
        "patient": 123,
    }
    rec = Recorder(ok(body))
    token = refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT")
    assert (token.refresh_token, token.tenant, token.smart_style_url, token.intent) == ("RT-2", None, None, None)
    assert token.scope == "patient/Observation.rs offline_access"  # a list of scopes is the scopes it lists
    assert token.fhir_context == ({"reference": "Encounter/1"},) and token.patient == "123"
