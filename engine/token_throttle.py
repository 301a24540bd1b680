"""A sync's token refresh throttled by the token endpoint is a throttle of the EHR, like a FHIR 429 (BDX-10).

The vault reports a token endpoint's 429 (or 503 with ``Retry-After``) as ``TemporarilyUnavailableError``, an
OAuth error the sync took for any other failure of the step: a batch stopped nobody, deferred nobody and sent the
next member's refresh to the same throttled endpoint. The engine's token source turns it into
``TokenEndpointThrottledError``, a ``RateLimitedError`` carrying the endpoint's ``Retry-After`` (seconds or an
HTTP-date, already parsed), so a batch defers the source's later members until then (``engine.batch_defer``). The
refresh token is untouched: a throttled grant granted nothing, and the vault keeps it for the next refresh.
"""

from __future__ import annotations

from collections.abc import Callable

from connectors.errors import RateLimitedError, TemporarilyUnavailableError
from connectors.tokens import TokenSource

__all__ = ["ThrottleAwareTokenSource", "TokenEndpointThrottledError", "token_throttle"]


class TokenEndpointThrottledError(RateLimitedError):
    """The token endpoint throttled a sync's refresh (429, or 503 with ``Retry-After``); ``retry_after``: its
    ``Retry-After`` in seconds (None: it named no time)."""

    code = "token_endpoint_throttled"


def token_throttle(exc: TemporarilyUnavailableError, connection_id: str) -> TokenEndpointThrottledError | None:
    """The throttle ``exc`` is (a 429, or a 503 that said when to come back), or None (the endpoint failing)."""
    status, wait = exc.status, exc.retry_after
    if status != 429 and not (status == 503 and wait is not None):
        return None
    said = f", Retry-After {wait:g} s" if wait is not None else ""
    return TokenEndpointThrottledError(
        f"the token endpoint throttled the token refresh of connection {connection_id} (HTTP {status}{said}); "
        "nothing was granted, the refresh token is kept for the next attempt",
        status,
        retry_after=wait,
    )


class ThrottleAwareTokenSource:
    """The vault's token source for one connection, with its token endpoint's throttles raised as throttles."""

    def __init__(self, inner: TokenSource, connection_id: str) -> None:
        self._inner = inner
        self.connection_id = connection_id

    def get_token(self) -> str:
        return self._throttled(self._inner.get_token)

    def refresh_after_unauthorized(self, rejected: str) -> str:
        return self._throttled(lambda: self._inner.refresh_after_unauthorized(rejected))

    def _throttled(self, call: Callable[[], str]) -> str:
        try:
            return call()
        except TemporarilyUnavailableError as exc:
            throttle = token_throttle(exc, self.connection_id)
            if throttle is None:
                raise
            raise throttle from exc
