"""Connect links whose claims are sealed with AES-256-GCM, so the host app's user reference is not readable.

A link is ``v1.<kid>.<base64url(nonce ‖ ciphertext+tag)>``: the vault's envelope (``store.crypto``), with the
app's key material and associated data of its own, so a link can never be replayed as a stored secret or the
reverse, and links sealed before a key rotation open while the old key is still listed (never one sealed under a
placeholder key: ``LinkKeyError``, which names the key id for the route to log). Links of the earlier
HMAC-signed format (``payload.signature``, claims readable) are still accepted until they expire: they live
at most ``CONNECT_LINK_TTL_SECONDS`` (24 hours at most), and no new one is issued.
"""

from __future__ import annotations

import json
import secrets
import time

from auth_service.core.links import ConnectLinkClaims, InvalidLinkError, LinkKeyError, LinkSigner
from store.crypto import CipherError, PlaceholderKeyError, TokenCipher, UnknownKeyIdError

__all__ = ["MAX_LINK_CHARS", "ConnectLinks"]

#: The longest link accepted: what the routes that take a ``link`` allow too, and more than the longest link
#: issued (user_ref 200 characters of any script, return_to 500, claims kept in UTF-8: under 2,000).
MAX_LINK_CHARS = 4000

_OWNER = "connect-link"
_FIELD = "claims"


class ConnectLinks:
    """Issues sealed connect links and opens them (and still-valid legacy signed ones)."""

    def __init__(self, cipher: TokenCipher, legacy: LinkSigner) -> None:
        self._cipher = cipher
        self._legacy = legacy

    def sign(
        self,
        tenant_id: str,
        user_ref: str,
        ttl_seconds: int,
        now: float | None = None,
        return_to: str | None = None,
    ) -> str:
        issued = int(now if now is not None else time.time())
        claims = {"t": tenant_id, "u": user_ref, "exp": issued + ttl_seconds, "n": secrets.token_urlsafe(9)}
        if return_to:
            claims["r"] = return_to
        plain = json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return self._cipher.encrypt(plain, tenant_id="", owner_id=_OWNER, field=_FIELD)

    def verify(self, token: str, now: float | None = None) -> ConnectLinkClaims:
        if not token.isascii() or len(token) > MAX_LINK_CHARS:
            raise InvalidLinkError("connect link is malformed")
        if token.count(".") == 1:
            return self._legacy.verify(token, now=now)
        try:
            plain = self._cipher.open_presented(token, tenant_id="", owner_id=_OWNER, field=_FIELD)
        except UnknownKeyIdError as exc:
            raise LinkKeyError("connect link was sealed with a key this service no longer has", exc.kid) from None
        except PlaceholderKeyError as exc:
            message = "connect link was sealed with a placeholder key, which anyone can seal with"
            raise LinkKeyError(message, exc.kid, placeholder=True) from None
        except CipherError:
            raise InvalidLinkError("connect link is malformed or was altered") from None
        try:
            data = json.loads(plain)
            ret = data.get("r")
            claims = ConnectLinkClaims(
                str(data["t"]), str(data["u"]), int(data["exp"]), str(data["n"]), str(ret) if ret else None
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidLinkError("connect link payload is malformed") from None
        if claims.expires_at < (now if now is not None else time.time()):
            raise InvalidLinkError("connect link has expired")
        return claims
