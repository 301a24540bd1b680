"""Opaque, tamper-evident page cursors for keyset-paged lists (``GET /api/ehr/resources``).

A cursor is ``base64url(JSON).base64url(HMAC-SHA256)`` under a key derived from the service secret for this
purpose only. It carries the last key of the page it continues and the query it belongs to (tenant, connection,
type filter), so a cursor that was altered, or replayed against another connection, type or tenant, is refused
instead of silently paging something else. It never expires: a key is a position, valid as long as ordering is.
A cursor is signed with the active key and verified under the old keys too, so a host app paging through a
connection during a key rotation goes on; one signed under a key no longer listed is refused (start again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_CURSOR_CHARS", "CursorSigner", "InvalidCursorError", "PageQuery"]

MAX_CURSOR_CHARS = 2048
_VERSION = 1


class InvalidCursorError(ValueError):
    """The cursor is malformed, altered or belongs to another query (the message says which, never the cursor)."""


@dataclass(frozen=True)
class PageQuery:
    """What a cursor is bound to: the caller's tenant, the connection and the type filter (``None``: all)."""

    tenant_id: str
    connection_id: str
    resource_type: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Signs and verifies cursors; ``purpose`` separates this key from the service's other HMAC keys."""

    def __init__(self, secret: bytes, purpose: str = "page-cursor", *, old_secrets: Sequence[bytes] = ()) -> None:
        derived = [hmac.new(s, f"ehrsync:{purpose}".encode(), hashlib.sha256).digest() for s in (secret, *old_secrets)]
        self._key, self._keys = derived[0], derived

    def encode(self, query: PageQuery, after: tuple[str, str]) -> str:
        claims = {
            "v": _VERSION,
            "tn": query.tenant_id,
            "c": query.connection_id,
            "t": query.resource_type,
            "a": list(after),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._sig(payload)}"

    def decode(self, cursor: str, query: PageQuery) -> tuple[str, str]:
        """The key to continue after; ``InvalidCursorError`` unless the cursor is intact and of ``query``."""
        payload, sep, sig = cursor.partition(".")
        if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii() or not sep or not payload or not sig:
            raise InvalidCursorError("'cursor' is malformed: pass the nextCursor of the previous page unchanged")
        if not any(hmac.compare_digest(self._sig(payload, key), sig) for key in self._keys):
            raise InvalidCursorError("'cursor' was altered or is not one of this service's cursors")
        try:
            claims = json.loads(_unb64(payload))
            after = claims["a"]
            bound = PageQuery(str(claims["tn"]), str(claims["c"]), claims["t"])
            if claims["v"] != _VERSION or not (
                isinstance(after, list) and len(after) == 2 and all(isinstance(k, str) for k in after)
            ):
                raise ValueError("unsupported cursor")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise InvalidCursorError("'cursor' payload is malformed") from None
        if bound != query:
            raise InvalidCursorError("'cursor' belongs to another query (connectionId or resourceType differ)")
        return after[0], after[1]

    def _sig(self, payload: str, key: bytes | None = None) -> str:
        return _b64(hmac.new(key or self._key, payload.encode("ascii"), hashlib.sha256).digest())
