"""The sandbox's token endpoint asks every confidential client for its proof (SAL-27..29, server side).

Each test fails if one check of ``sandbox/oauth/client_auth.py`` is dropped: a client registered with keys that
sends only its ``client_id``, a ``client_secret_post`` with the wrong secret, a secret from a client that has none.
"""

from __future__ import annotations

import base64

import httpx

from sandbox import SandboxServer
from tests.sandbox.helpers import (
    REDIRECT,
    authorize,
    authorize_params,
    backend_client,
    exchange,
    new_client_id,
    pkce,
    public_client,
    query_of,
    rsa_key,
)

_SECRET = "s3cret:+/"


def _code(sb: SandboxServer, cid: str) -> tuple[str, str]:
    sb.admin.preapprove(cid, "pat1")
    verifier, challenge = pkce()
    got = query_of(authorize(sb, authorize_params(sb, cid, "launch/patient patient/*.rs", challenge)))
    return got["code"], verifier


def _refused(resp: httpx.Response) -> bool:
    return resp.status_code == 401 and resp.json()["error"] == "invalid_client" and "access_token" not in resp.text


def test_sal27_sal29_a_client_with_keys_that_sends_only_its_client_id_is_refused(sandbox: SandboxServer) -> None:
    """SAL-27: only a public client may rest on ``client_id`` (and PKCE). A confidential-asymmetric client on a
    code exchange and a backend client on ``client_credentials`` that send no assertion get 401 ``invalid_client``;
    so does a Basic header from a client that has no secret (never a 500)."""
    _, jwk = rsa_key()
    cid = new_client_id("asym")
    sandbox.admin.register_client(cid, "confidential-asymmetric", jwks={"keys": [jwk]}, redirect_uris=[REDIRECT])
    code, verifier = _code(sandbox, cid)
    assert _refused(exchange(sandbox, cid, code, verifier))
    basic = "Basic " + base64.b64encode(f"{cid}:anything".encode()).decode()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    assert _refused(httpx.post(sandbox.base_url + "/oauth/token", data=form, headers={"Authorization": basic}))

    backend, _, _ = backend_client(sandbox)
    form = {"grant_type": "client_credentials", "scope": "system/*.rs", "client_id": backend}
    assert _refused(httpx.post(sandbox.base_url + "/oauth/token", data=form))


def test_sal28_client_secret_post_is_advertised_and_accepted_only_with_the_flag(sandbox: SandboxServer) -> None:
    """SAL-28 (server): discovery lists ``client_secret_post`` only while the flag is on, and with it on a wrong
    secret in the body is still 401 ``invalid_client`` with a ``WWW-Authenticate`` challenge."""
    smart = sandbox.fhir_base + "/.well-known/smart-configuration"
    assert "client_secret_post" not in httpx.get(smart).json()["token_endpoint_auth_methods_supported"]
    sandbox.admin.settings(accept_client_secret_post=True)
    assert "client_secret_post" in httpx.get(smart).json()["token_endpoint_auth_methods_supported"]

    cid = new_client_id("sym")
    sandbox.admin.register_client(cid, "confidential-symmetric", client_secret=_SECRET, redirect_uris=[REDIRECT])
    code, verifier = _code(sandbox, cid)
    wrong = exchange(sandbox, cid, code, verifier, client_secret=_SECRET + "x")
    assert _refused(wrong) and wrong.headers["www-authenticate"].startswith("Basic")
    assert exchange(sandbox, cid, code, verifier, client_secret=_SECRET).status_code == 200


def test_sal27_sal28_a_public_client_posting_a_secret_is_refused_not_crashed(sandbox: SandboxServer) -> None:
    """A public client has no secret to check: with ``client_secret_post`` on, one in its body is 401
    ``invalid_client``, not a 500 from comparing against nothing."""
    sandbox.admin.settings(accept_client_secret_post=True)
    cid = public_client(sandbox)
    code, verifier = _code(sandbox, cid)
    assert _refused(exchange(sandbox, cid, code, verifier, client_secret="guess"))
