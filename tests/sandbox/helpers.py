"""Client-side helpers for sandbox tests: PKCE launches, client assertions, key pairs."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.transport.tls import default_ssl_context
from sandbox import SandboxServer

REDIRECT = "http://127.0.0.1:9/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def new_client_id(prefix: str = "app") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def authorize_params(sb: SandboxServer, client_id: str, scope: str, challenge: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": secrets.token_urlsafe(16),
        "aud": sb.fhir_base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def authorize(sb: SandboxServer, params: dict[str, str]) -> httpx.Response:
    return httpx.get(
        sb.base_url + "/oauth/authorize?" + urlencode(params), follow_redirects=False, verify=default_ssl_context()
    )


def query_of(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    return {k: v[0] for k, v in parse_qs(urlparse(resp.headers["location"]).query).items()}


def public_client(sb: SandboxServer) -> str:
    cid = new_client_id("public")
    sb.admin.register_client(cid, "public", redirect_uris=[REDIRECT])
    return cid


def patient_login(
    sb: SandboxServer, scope: str = "launch/patient openid fhirUser offline_access patient/*.rs", patient: str = "pat1"
) -> tuple[str, dict[str, Any]]:
    """Pre-approved standalone launch of a fresh public client; returns (client_id, token response)."""
    cid = public_client(sb)
    sb.admin.preapprove(cid, patient)
    verifier, challenge = pkce()
    got = query_of(authorize(sb, authorize_params(sb, cid, scope, challenge)))
    resp = exchange(sb, cid, got["code"], verifier)
    assert resp.status_code == 200, resp.text
    return cid, resp.json()


def exchange(sb: SandboxServer, client_id: str, code: str, verifier: str | None, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id}
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(extra)
    return httpx.post(sb.base_url + "/oauth/token", data=form, verify=default_ssl_context())


def rsa_key() -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**jwk, "kid": uuid.uuid4().hex[:8], "alg": "RS384"}


def ec_key() -> tuple[Any, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**jwk, "kid": uuid.uuid4().hex[:8], "alg": "ES384"}


def assertion(sb: SandboxServer, client_id: str, key: Any, jwk: dict[str, Any], **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": sb.base_url + "/oauth/token",
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": jwk["kid"], "typ": "JWT"}
    headers.update(overrides.pop("headers", {}))
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=jwk["alg"], headers=headers)


def backend_client(
    sb: SandboxServer, allowed: str | None = None, alg: str = "RS384"
) -> tuple[str, Any, dict[str, Any]]:
    key, jwk = rsa_key() if alg == "RS384" else ec_key()
    cid = new_client_id("backend")
    sb.admin.register_client(cid, "backend", jwks={"keys": [jwk]}, allowed_scopes=allowed)
    return cid, key, jwk


def backend_token_response(
    sb: SandboxServer, cid: str, key: Any, jwk: dict[str, Any], scope: str = "system/*.rs", **overrides: Any
) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(sb, cid, key, jwk, **overrides),
    }
    return httpx.post(sb.base_url + "/oauth/token", data=form, verify=default_ssl_context())


def backend_token(sb: SandboxServer, scope: str = "system/*.rs") -> str:
    cid, key, jwk = backend_client(sb)
    resp = backend_token_response(sb, cid, key, jwk, scope)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


# --- Bulk Data ------------------------------------------------------------------------------------------------

ASYNC = {"Prefer": "respond-async"}


def kickoff(
    sb: SandboxServer,
    token: str,
    path: str = "/$export",
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    h = {**bearer(token), **(ASYNC if headers is None else headers)}
    if method == "POST":
        return httpx.post(sb.fhir_base + path, headers=h, content=orjson.dumps(body), verify=default_ssl_context())
    return httpx.get(sb.fhir_base + path, headers=h, params=params, verify=default_ssl_context())


def wait(status_url: str, token: str, timeout_s: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = httpx.get(
            status_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            verify=default_ssl_context(),
        )
        if resp.status_code != 202:
            return resp
        assert "Retry-After" in resp.headers
        time.sleep(0.05)
    raise AssertionError("export did not finish")


def run(sb: SandboxServer, token: str, **kw: Any) -> dict[str, Any]:
    resp = kickoff(sb, token, **kw)
    assert resp.status_code == 202, resp.text
    done = wait(resp.headers["content-location"], token)
    assert done.status_code == 200, done.text
    manifest: dict[str, Any] = done.json()
    return manifest


def lines(url: str, token: str | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(url, headers=headers, verify=default_ssl_context())
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in resp.content.splitlines()]
