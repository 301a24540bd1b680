"""Which of a client's published keys the sandbox verifies an assertion with (SAL-31: a ``kid`` is required and the
one key chosen has that ``kid`` and the ``kty`` its ``alg`` needs), over a real socket."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt

from sandbox import SandboxServer
from tests.sandbox.helpers import ASSERTION_TYPE, backend_token_response, ec_key, new_client_id, rsa_key


def _registered(sb: SandboxServer, *jwks: dict[str, Any]) -> str:
    cid = new_client_id("backend")
    sb.admin.register_client(cid, "backend", jwks={"keys": list(jwks)})
    return cid


def test_sal31_a_key_of_another_kty_under_the_same_kid_does_not_stand_in_the_way(sandbox: SandboxServer) -> None:
    """A client publishing its RSA and its EC P-384 key under one ``kid`` (a key pair per alg, one name) signs in
    with either: the EC key is no candidate for an RS384 assertion, nor the RSA key for ES384. Checking the ``kid``
    alone would find two keys and refuse both."""
    (rsa, rsa_jwk), (ec, ec_jwk) = rsa_key(), ec_key()
    cid = _registered(sandbox, rsa_jwk, {**ec_jwk, "kid": rsa_jwk["kid"]})
    for key, jwk in ((rsa, rsa_jwk), (ec, {**ec_jwk, "kid": rsa_jwk["kid"]})):
        resp = backend_token_response(sandbox, cid, key, jwk)
        assert resp.status_code == 200, (jwk["alg"], resp.text)


def test_sal31_an_assertion_without_kid_is_invalid_client_even_when_a_published_key_has_none(
    sandbox: SandboxServer,
) -> None:
    """``kid`` is required. A JWKS whose one key carries no ``kid`` must not make a ``kid``-less
    assertion verifiable by that key."""
    key, jwk = rsa_key()
    cid = _registered(sandbox, {k: v for k, v in jwk.items() if k != "kid"})
    now = int(time.time())
    claims = {"iss": cid, "sub": cid, "aud": sandbox.base_url + "/oauth/token", "exp": now + 240}
    signed = jwt.encode({**claims, "jti": str(uuid.uuid4())}, key, algorithm="RS384", headers={"typ": "JWT"})
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
    }
    resp = httpx.post(sandbox.base_url + "/oauth/token", data=form)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "invalid_client"
