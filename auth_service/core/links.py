"""Short-lived HMAC-signed connect links: a host app hands one to its user to start a connection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ConnectLinkClaims", "InvalidLinkError", "LinkKeyError", "LinkSigner"]


class InvalidLinkError(ValueError):
    """The link is malformed, tampered with or expired (the message says which, never the link)."""


class LinkKeyError(InvalidLinkError):
    """The link is sealed under a key this service will not open it with: one no longer configured, or a
    placeholder (``kid`` names it: an operator's to mend or to notice, never a secret)."""

    def __init__(self, message: str, kid: str, *, placeholder: bool = False) -> None:
        super().__init__(message)
        self.kid = kid
        self.placeholder = placeholder


@dataclass(frozen=True)
class ConnectLinkClaims:
    tenant_id: str
    user_ref: str
    expires_at: int
    nonce: str
    return_to: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies ``payload.signature`` tokens (HMAC-SHA256 over a purpose-specific derived key).

    ``old_secrets`` verify only (the other base64 alphabet of the same key: ``store.crypto.key_texts``)."""

    def __init__(self, secret: bytes, purpose: str = "connect-link", *, old_secrets: Sequence[bytes] = ()) -> None:
        derived = [hmac.new(s, f"ehrsync:{purpose}".encode(), hashlib.sha256).digest() for s in (secret, *old_secrets)]
        self._key, self._keys = derived[0], derived

    def sign(self, tenant_id: str, user_ref: str, ttl_seconds: int, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {"t": tenant_id, "u": user_ref, "exp": issued + ttl_seconds, "n": secrets.token_urlsafe(12)}
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._sig(payload)}"

    def verify(self, token: str, now: float | None = None) -> ConnectLinkClaims:
        payload, sep, sig = token.partition(".")
        # Browser input: non-ASCII text would crash the HMAC comparison (TypeError) instead of failing it.
        if not token.isascii() or not sep or not payload or not sig:
            raise InvalidLinkError("connect link is malformed")
        if not any(hmac.compare_digest(self._sig(payload, key), sig) for key in self._keys):
            raise InvalidLinkError("connect link signature is invalid")
        try:
            claims = json.loads(_unb64(payload))
            result = ConnectLinkClaims(str(claims["t"]), str(claims["u"]), int(claims["exp"]), str(claims["n"]))
        except (ValueError, KeyError, TypeError):
            raise InvalidLinkError("connect link payload is malformed") from None
        if result.expires_at < (now if now is not None else time.time()):
            raise InvalidLinkError("connect link has expired")
        return result

    def _sig(self, payload: str, key: bytes | None = None) -> str:
        return _b64(hmac.new(key or self._key, payload.encode("ascii"), hashlib.sha256).digest())
