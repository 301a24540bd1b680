"""Verify ``private_key_jwt`` client assertions exactly as SAL-31 demands."""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Collection
from typing import Any

import httpx
import jwt

from sandbox.oauth.state import AuthState, ClientRegistration

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_KTY_FOR_ALG = {"RS384": "RSA", "ES384": "EC"}
MAX_LIFETIME_S = 300
SKEW_S = 60


class AssertionRejected(Exception):
    """The assertion is unacceptable; the message names the failed check (never the assertion itself)."""


def _tls_context() -> ssl.SSLContext:
    """One TLS context per trust setting for JWKS fetches: httpx builds one per call otherwise, loading the CA
    bundle each time. ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are read at each fetch, as httpx would."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@functools.cache
def _tls_context_for(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _jwks(client: ClientRegistration, jku: str | None) -> dict[str, Any]:
    if jku is not None and jku != client.jwks_url:
        raise AssertionRejected("jku does not match the registered JWKS URL")
    if client.jwks is not None and client.jwks_url is None:
        return client.jwks
    try:
        resp = httpx.get(str(client.jwks_url), timeout=5.0, verify=_tls_context())
        resp.raise_for_status()
        data = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise AssertionRejected(f"could not fetch the client's JWKS: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise AssertionRejected("the client's JWKS is not a JSON object")
    return data


def verify_assertion(
    assertion: str,
    token_url: str,
    state: AuthState,
    now: float | None = None,
    *,
    leeway_s: float = SKEW_S,
    algs: Collection[str] = tuple(_KTY_FOR_ALG),
) -> str:
    """Return the authenticated client id, or raise AssertionRejected naming the failed SAL-31 check; ``leeway_s``
    is the clock skew allowed on ``exp``, ``algs`` the algs this server accepts."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AssertionRejected("client_assertion is not a JWT") from exc
    client_id = claims.get("iss")
    client = state.clients.get(str(client_id))
    if client is None or claims.get("sub") != client_id:
        raise AssertionRejected("iss and sub must both equal a registered client_id")
    if client.client_type not in ("confidential-asymmetric", "backend"):
        raise AssertionRejected("client is not registered for private_key_jwt")
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in _KTY_FOR_ALG or alg not in algs:
        raise AssertionRejected(f"alg {alg!r} not supported ({', '.join(a for a in _KTY_FOR_ALG if a in algs)})")
    if not kid:
        raise AssertionRejected("kid header is required")
    keys = [k for k in _jwks(client, header.get("jku")).get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    keys = [k for k in keys if k.get("kty") == _KTY_FOR_ALG[alg]]
    if len(keys) != 1:
        raise AssertionRejected(f"expected exactly one {_KTY_FOR_ALG[alg]} key with kid {kid!r}, found {len(keys)}")
    try:
        key = jwt.PyJWK(keys[0], algorithm=alg).key
        verified = jwt.decode(
            assertion,
            key,
            algorithms=[alg],
            audience=token_url,
            options={"require": ["exp", "iss", "sub", "aud", "jti"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise AssertionRejected(f"assertion rejected: {type(exc).__name__}") from exc
    exp = float(verified["exp"])
    if exp < now - leeway_s:
        raise AssertionRejected("assertion has expired")
    if exp > now + MAX_LIFETIME_S + leeway_s:
        raise AssertionRejected("exp is more than 5 minutes ahead")
    if not state.remember_jti(str(client_id), str(verified["jti"]), exp + leeway_s):
        raise AssertionRejected("jti already used (replay)")
    return str(client_id)
