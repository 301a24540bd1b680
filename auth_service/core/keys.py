"""The client's signing key and its public JWKS (SAL-29, SAL-30), with rotation.

Rotation: publish the new key next to the old one (``EHR_JWT_PREVIOUS_PUBLIC_KEYS``), wait out the EHRs'
JWKS caches, then switch ``EHR_JWT_PRIVATE_KEY``/``EHR_JWT_KEY_ID``; the old public key stays published
until it is removed from the previous-keys list.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.smart import parse_pem_private_key

__all__ = ["SigningKey", "build_jwks", "load_private_key", "parse_previous_keys", "public_jwk"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_PUBLIC_MEMBERS = {"kty", "kid", "alg", "use", "n", "e", "crv", "x", "y", "key_ops"}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def _b64u(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def load_private_key(value: str) -> PrivateKey:
    """Load ``EHR_JWT_PRIVATE_KEY``: PEM text or a path to a PEM file; RSA (>= 2048 bits) or EC P-384."""
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        path = Path(text).expanduser()  # ``~/...`` as every other path setting (and the pipelines' key reader)
        if not path.is_file():
            raise ValueError("EHR_JWT_PRIVATE_KEY is neither PEM text nor a path to a readable PEM file")
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):  # binary or unreadable: named by its variable, like any bad key
            raise ValueError(f"EHR_JWT_PRIVATE_KEY: {path} is not a readable PEM file (ASCII text)") from None
    try:
        key = parse_pem_private_key(text.encode("ascii"))
    except (ValueError, TypeError):
        raise ValueError("EHR_JWT_PRIVATE_KEY is not a readable unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError("EHR_JWT_PRIVATE_KEY: RSA keys must have at least 2048 bits")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise ValueError("EHR_JWT_PRIVATE_KEY: EC keys must use curve P-384 (ES384)")
        return key
    raise ValueError("EHR_JWT_PRIVATE_KEY must be an RSA or EC P-384 key")


def public_jwk(key: PrivateKey, kid: str) -> dict[str, str]:
    """The public half as a JWK with ``kid`` and ``alg`` (RS384 / ES384); never a private member."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig", "n": _b64u(numbers.n), "e": _b64u(numbers.e)}
    pub = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "alg": "ES384",
        "use": "sig",
        "crv": "P-384",
        "x": _b64u(pub.x, 48),
        "y": _b64u(pub.y, 48),
    }


def parse_previous_keys(value: str) -> list[dict[str, Any]]:
    """``EHR_JWT_PREVIOUS_PUBLIC_KEYS``: a JWKS object, a JSON list of JWKs, or a path to a file with either."""
    text = value.strip()
    if text and text[0] not in "[{":
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError("EHR_JWT_PREVIOUS_PUBLIC_KEYS is neither JSON nor a path to a JSON file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise ValueError(f"EHR_JWT_PREVIOUS_PUBLIC_KEYS: {path} is not a readable JSON file (UTF-8)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("EHR_JWT_PREVIOUS_PUBLIC_KEYS is not valid JSON") from None
    keys = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(keys, list):
        raise ValueError("EHR_JWT_PREVIOUS_PUBLIC_KEYS must be a JWKS object or a list of JWKs")
    result: list[dict[str, Any]] = []
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict) or not jwk.get("kid") or jwk.get("kty") not in ("RSA", "EC"):
            raise ValueError(f"EHR_JWT_PREVIOUS_PUBLIC_KEYS[{index}] needs 'kid' and 'kty' RSA or EC")
        if _PRIVATE_MEMBERS & set(jwk):
            raise ValueError(f"EHR_JWT_PREVIOUS_PUBLIC_KEYS[{index}] contains private key members")
        result.append({k: v for k, v in jwk.items() if k in _PUBLIC_MEMBERS})
    return result


@dataclass(frozen=True)
class SigningKey:
    """The current private key with its ``kid`` and JWS algorithm."""

    key: PrivateKey
    kid: str

    @property
    def alg(self) -> str:
        return "RS384" if isinstance(self.key, rsa.RSAPrivateKey) else "ES384"

    @property
    def pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


def build_jwks(current: SigningKey | None, previous: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Current key first, then previous keys not sharing its ``kid`` (rotation overlap)."""
    keys: list[dict[str, Any]] = []
    if current is not None:
        keys.append(public_jwk(current.key, current.kid))
    seen = {k["kid"] for k in keys}
    for jwk in previous:
        if jwk["kid"] not in seen:
            keys.append(jwk)
            seen.add(jwk["kid"])
    return {"keys": keys}
