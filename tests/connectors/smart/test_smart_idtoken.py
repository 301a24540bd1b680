"""id_token validation (SAL-33, SAL-42): signature, iss, aud, exp, iat, nonce, rotated kid, alg none."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from connectors.errors import EhrSyncError, SecurityPolicyError
from connectors.smart import IdTokenError, JwksCache, validate_id_token
from connectors.smart._http import post_form
from tests.connectors.smart.keys import ec_key, public_jwk, rsa_key

ISS = "https://ehr.example/fhir"
JWKS_URI = "https://ehr.example/oauth/jwks"


class Idp:
    """Serves openid-configuration and a JWKS that the test can rotate."""

    def __init__(self) -> None:
        self.keys = [public_jwk(rsa_key(), "k1", "RS256"), public_jwk(ec_key(), "e1", "ES384")]
        self.jwks_fetches = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == ISS + "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISS, "jwks_uri": JWKS_URI})
        if str(request.url) == JWKS_URI:
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": self.keys})
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def make(claims: dict[str, Any] | None = None, *, key: Any = None, kid: str = "k1", alg: str = "RS256") -> str:
    now = int(time.time())
    body = {"iss": ISS, "sub": "u1", "aud": "app", "exp": now + 300, "iat": now, "nonce": "n1", "fhirUser": "Patient/1"}
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key or rsa_key(), algorithm=alg, headers={"kid": kid})


def check(token: str, idp: Idp, cache: JwksCache | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("nonce", "n1")
    return validate_id_token(token, issuer=ISS, client_id="app", http=idp.client(), cache=cache or JwksCache(), **kw)


def test_sal33_valid_rs256_and_es384() -> None:
    idp = Idp()
    assert check(make(), idp)["fhirUser"] == "Patient/1"
    assert check(make(key=ec_key(), kid="e1", alg="ES384"), idp)["sub"] == "u1"


def test_sal33_aud_list_containing_client_id() -> None:
    assert check(make({"aud": ["other", "app"], "azp": "app"}), Idp())["aud"] == ["other", "app"]


def _from_now(offset_s: int) -> Callable[[], int]:
    """A time claim taken when the test runs, not when the suite is collected: a suite that runs past ten minutes
    would otherwise find "600 s in the future" already past."""
    return lambda: int(time.time()) + offset_s


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "someone-else"}, "aud"),
        ({"iss": "https://evil.example/fhir"}, "iss"),
        ({"exp": _from_now(-120)}, "expired"),
        ({"iat": _from_now(600)}, "future"),
        ({"nonce": "other"}, "nonce"),
        ({"exp": None}, "exp"),
        ({"aud": ["other", "app"], "azp": "other"}, "azp"),
        ({"iat": _from_now(30), "exp": _from_now(10)}, "iat is after exp"),
    ],
    ids=["wrong-aud", "wrong-iss", "expired", "iat-future", "nonce", "no-exp", "azp", "iat-after-exp"],
)
def test_sal33_claim_failures(claims: dict[str, Any], message: str) -> None:
    claims = {name: value() if callable(value) else value for name, value in claims.items()}
    with pytest.raises(IdTokenError, match=message):
        check(make(claims), Idp())


def test_sal42_sixty_seconds_of_skew_tolerated() -> None:
    now = int(time.time())
    assert check(make({"exp": now - 30, "iat": now - 300}), Idp())  # expired 30 s ago
    assert check(make({"iat": now + 30}), Idp())  # issuer clock 30 s ahead


def test_sal42_skew_tolerance_ends_at_sixty_seconds() -> None:
    """The tolerance is 60 s, not more: a token expired 61 s ago, or issued 61 s ahead of our clock, is refused.
    The check's clock is pinned (``now=``), so the boundary holds however slowly the test runs."""
    now = int(time.time())
    with pytest.raises(IdTokenError, match="expired"):
        check(make({"exp": now - 61, "iat": now - 300}), Idp(), now=now)
    with pytest.raises(IdTokenError, match="future"):
        check(make({"iat": now + 61}), Idp(), now=now)


def test_sal33_bad_signature() -> None:
    token = make(key=rsa_key(1))  # signed by a key the issuer never published, same kid
    with pytest.raises(IdTokenError, match="signature"):
        check(token, Idp())


def test_sal33_alg_none_refused() -> None:
    token = jwt.encode({"iss": ISS, "aud": "app"}, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(IdTokenError, match="alg 'none' not accepted"):  # refused for its alg, before any key
        check(token, Idp())


def test_sal33_hs256_refused_even_with_public_key_material() -> None:
    token = jwt.encode({"iss": ISS, "aud": "app"}, "secret-secret-secret-secret-secret!", algorithm="HS256")
    with pytest.raises(IdTokenError, match="alg 'HS256' not accepted"):  # refused for its alg, before any key
        check(token, Idp())


def test_sal33_rotated_kid_refetches_jwks_once() -> None:
    idp = Idp()
    cache = JwksCache()
    check(make(), idp, cache)
    assert idp.jwks_fetches == 1
    idp.keys = [public_jwk(rsa_key(1), "k2", "RS256")]  # issuer rotated its key
    assert check(make(key=rsa_key(1), kid="k2"), idp, cache)["sub"] == "u1"
    assert idp.jwks_fetches == 2
    with pytest.raises(IdTokenError, match="kid"):
        check(make(kid="unknown"), idp, cache)
    assert idp.jwks_fetches == 3  # exactly one refetch per unknown kid


def test_sal33_explicit_jwks_uri_skips_openid_configuration() -> None:
    idp = Idp()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return idp(request)

    validate_id_token(
        make(),
        issuer=ISS,
        client_id="app",
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        jwks_uri=JWKS_URI,
        cache=JwksCache(),
    )
    assert seen == [JWKS_URI]


def test_sal41_jwks_not_fetched_for_unlisted_issuer() -> None:
    idp = Idp()
    with pytest.raises(SecurityPolicyError):
        check(make(), idp, allowlist=["https://other.example/fhir"])
    assert idp.jwks_fetches == 0
    assert check(make(), idp, allowlist=[ISS])["sub"] == "u1"


@pytest.mark.parametrize("answer", ["http_404", "http_503", "no_keys", "unreachable", "token_endpoint_unreachable"])
def test_sal38_a_server_named_smart_url_is_quoted_without_its_path_parameters_or_query(answer: str) -> None:
    """A ``jwks_uri`` (or token endpoint) a server names may carry a session id in its path parameters
    (``;jsessionid=``) or a signature in its query: errors, which reach logs, name it through ``redact_url``.
    Before, the JWKS errors and the transport failures of every SMART call quoted the URL whole."""
    uri = "https://ehr.example/oauth;v=SECRET0/jwks;jsessionid=SECRET1?sig=SECRET2"

    def serve(request: httpx.Request) -> httpx.Response:
        if answer.endswith("unreachable"):
            raise httpx.ConnectError("refused", request=request)
        status = {"http_404": 404, "http_503": 503}.get(answer, 200)
        return httpx.Response(status, json={"keys": "none"})

    with httpx.Client(transport=httpx.MockTransport(serve)) as http, pytest.raises(EhrSyncError) as info:
        if answer == "token_endpoint_unreachable":
            post_form(http, uri, {"grant_type": "client_credentials"})
        else:
            JwksCache().keys(uri, http)
    assert "https://ehr.example/oauth/jwks" in str(info.value) and "SECRET" not in str(info.value), str(info.value)
