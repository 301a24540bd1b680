"""Where FHIR and Bulk clients get access tokens: a protocol the token vault implements.

The clients never decide where tokens live or how they are refreshed (the vault does, under a lock); they
only ask for a valid token and report a 401 once, so a refused token is refreshed exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from connectors.errors import ConfigurationError, NeedsReauthError

__all__ = ["StaticTokenSource", "TokenSource"]


@runtime_checkable
class TokenSource(Protocol):
    """Supplies bearer tokens for one connection (one FHIR base)."""

    def get_token(self) -> str:
        """A currently valid access token (implementations refresh near expiry)."""
        ...

    def refresh_after_unauthorized(self, rejected: str) -> str:
        """The server refused ``rejected`` with 401: return a new token or raise NeedsReauthError."""
        ...


class StaticTokenSource:
    """A fixed token (tests, backend tokens minted elsewhere), optionally with a one-shot ``refresher``.

    Without a refresher a 401 means the token is dead: NeedsReauthError. With one, a 401 on the current token
    calls it once; concurrent 401s on an already-replaced token just get the newer token.
    """

    def __init__(self, token: str, refresher: Callable[[], str] | None = None) -> None:
        if not token:
            raise ConfigurationError("StaticTokenSource needs a non-empty token")
        self._token = token
        self._refresher = refresher
        self._lock = threading.Lock()
        self.refresh_count = 0

    def get_token(self) -> str:
        with self._lock:
            return self._token

    def refresh_after_unauthorized(self, rejected: str) -> str:
        with self._lock:
            if rejected != self._token:
                return self._token
            if self._refresher is None:
                raise NeedsReauthError("access token rejected and no way to refresh it")
            fresh = self._refresher()
            if not fresh:
                raise NeedsReauthError("token refresher returned no token")
            self._token = fresh
            self.refresh_count += 1
            return fresh

    def __repr__(self) -> str:
        return f"StaticTokenSource(refreshable={self._refresher is not None})"
