"""Where FHIR and Bulk clients get access tokens: a protocol the token vault implements.

The clients never decide where tokens live or how they are refreshed (the vault does, under a lock); they
only ask for a valid token and report a 401 once, so a refused token is refreshed exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from connectors.errors import ConfigurationError, NeedsReauthError

__all__ = ["MintingTokenSource", "StaticTokenSource", "TokenSource"]


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


class MintingTokenSource:
    """Backend-services tokens: ``mint()`` returns ``(access_token, expires_in_seconds)``; reused until 80 %
    of their lifetime (short eCW/Oracle tokens are not re-minted per call), re-minted once after a 401.

    ``mint`` is typically ``connectors.smart.client_credentials_grant`` wrapped by the caller; errors it raises
    (OAuth errors, TransportError) propagate unchanged.
    """

    def __init__(
        self,
        mint: Callable[[], tuple[str, float]],
        *,
        refresh_at: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < refresh_at <= 1:
            raise ConfigurationError("refresh_at must be in (0, 1]")
        self._mint = mint
        self._refresh_at = refresh_at
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_after = 0.0
        self.mint_count = 0

    def _mint_locked(self) -> str:
        token, expires_in = self._mint()
        if not token:
            raise NeedsReauthError("token endpoint returned no access token")
        self._token = token
        self._renew_after = self._clock() + max(float(expires_in), 0.0) * self._refresh_at
        self.mint_count += 1
        return token

    def get_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._renew_after:
                return self._mint_locked()
            return self._token

    def refresh_after_unauthorized(self, rejected: str) -> str:
        with self._lock:
            if self._token is not None and rejected != self._token:
                return self._token
            return self._mint_locked()

    def __repr__(self) -> str:
        return f"MintingTokenSource(mints={self.mint_count})"
