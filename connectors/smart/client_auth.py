"""Token-endpoint client authentication (SAL-27..29) and RFC 7523 client assertions."""

from __future__ import annotations

import base64
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from connectors.errors import ConfigurationError

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "ClientAuth",
    "JwtClientAuth",
    "PublicClientAuth",
    "SecretClientAuth",
    "build_client_assertion",
    "load_signing_key",
    "parse_pem_private_key",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300
#: SAL-29: ``exp`` no more than 5 minutes ahead *on the server's clock*: a minute of margin for its skew.
DEFAULT_ASSERTION_LIFETIME_S = 240
SUPPORTED_ALGS = ("RS384", "ES384")

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.lru_cache(maxsize=16)
def parse_pem_private_key(data: bytes) -> PrivateKeyTypes:
    """An unencrypted PEM private key, parsed once per process: loading an RSA key checks it, 36 ms of CPU at 2048
    bits and 110 ms at 3072, and a key is loaded for each token refresh's client assertion and several times per
    sign-in by the auth service. Key objects are immutable and safe to share between threads; a failure is not
    cached (``ValueError``/``TypeError`` as ``load_pem_private_key`` raises them)."""
    return load_pem_private_key(data, password=None)


def load_signing_key(private_key: str | bytes | SigningKey) -> SigningKey:
    """Load an unencrypted PEM private key (RSA or EC); errors never echo the key material."""
    if isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return private_key
    data = private_key.encode("ascii") if isinstance(private_key, str) else private_key
    try:
        key = parse_pem_private_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("private key is not an unencrypted PEM RSA or EC private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigurationError("private key must be RSA (RS384) or EC P-384 (ES384)")
    return key


def _check_alg(key: SigningKey, alg: str) -> None:
    if alg not in SUPPORTED_ALGS:
        raise ConfigurationError(f"client assertion alg must be one of {', '.join(SUPPORTED_ALGS)}, got {alg!r}")
    if alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError("RS384 needs an RSA private key")
    if alg == "ES384" and (not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1"):
        raise ConfigurationError("ES384 needs an EC P-384 private key")


def build_client_assertion(
    *,
    client_id: str,
    audience: str,
    private_key: str | bytes | SigningKey,
    kid: str,
    alg: str = "RS384",
    jku: str | None = None,
    now: float | None = None,
    lifetime_s: int = DEFAULT_ASSERTION_LIFETIME_S,
) -> str:
    """A signed private_key_jwt assertion (SAL-29): iss=sub=client_id, aud=token endpoint, fresh jti."""
    if not kid:
        raise ConfigurationError("client assertion needs a key id (kid)")
    if not client_id or not audience:
        raise ConfigurationError("client assertion needs client_id and the token endpoint URL")
    if not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S:
        raise ConfigurationError(f"client assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME_S} seconds")
    key = load_signing_key(private_key)
    _check_alg(key, alg)
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": issued + lifetime_s,
        "iat": issued,
        "jti": str(uuid.uuid4()),
    }
    headers: dict[str, Any] = {"kid": kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


class ClientAuth:
    """How a client proves itself at the token, revocation and introspection endpoints."""

    method: str = "none"

    def __init__(self, client_id: str) -> None:
        if not client_id:
            raise ConfigurationError("client_id must not be empty")
        self.client_id = client_id

    def apply(self, form: dict[str, str], audience: str) -> tuple[dict[str, str], dict[str, str]]:
        """Return (form, headers) with credentials added; ``audience`` is the token endpoint URL (SAL-29 ``aud``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r})"


class PublicClientAuth(ClientAuth):
    """SAL-27: no secret; ``client_id`` goes in the body and PKCE is the proof."""

    method = "none"

    def apply(self, form: dict[str, str], audience: str) -> tuple[dict[str, str], dict[str, str]]:
        return {**form, "client_id": self.client_id}, {}


class SecretClientAuth(ClientAuth):
    """SAL-28: ``client_secret_basic`` with each part form-urlencoded before base64 (RFC 6749 §2.3.1)."""

    method = "client_secret_basic"

    def __init__(self, client_id: str, client_secret: str) -> None:
        super().__init__(client_id)
        if not client_secret:
            raise ConfigurationError("client_secret must not be empty for client_secret_basic")
        self._secret = client_secret

    def authorization_header(self) -> str:
        raw = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
        return "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")

    def apply(self, form: dict[str, str], audience: str) -> tuple[dict[str, str], dict[str, str]]:
        return dict(form), {"Authorization": self.authorization_header()}


@dataclass(repr=False)
class _JwtSettings:
    private_key: SigningKey
    kid: str
    alg: str
    jku: str | None
    clock: Callable[[], float] = field(default=time.time)


class JwtClientAuth(ClientAuth):
    """SAL-29: ``private_key_jwt``; a new assertion (new jti) for every request."""

    method = "private_key_jwt"

    def __init__(
        self,
        client_id: str,
        private_key: str | bytes | SigningKey,
        kid: str,
        alg: str = "RS384",
        jku: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client_id)
        if not kid:
            raise ConfigurationError("private_key_jwt needs a key id (kid)")
        key = load_signing_key(private_key)
        _check_alg(key, alg)
        self._settings = _JwtSettings(key, kid, alg, jku, clock)

    @property
    def alg(self) -> str:
        return self._settings.alg

    def assertion(self, audience: str) -> str:
        s = self._settings
        return build_client_assertion(
            client_id=self.client_id,
            audience=audience,
            private_key=s.private_key,
            kid=s.kid,
            alg=s.alg,
            jku=s.jku,
            now=s.clock(),
        )

    def apply(self, form: dict[str, str], audience: str) -> tuple[dict[str, str], dict[str, str]]:
        return {
            **form,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(audience),
        }, {}
