"""A vendor's call budget (e.g. eCW: 240 calls/min per practice): token buckets, the budget active for the
current request, and the transport that spends from it.

The active budget is a context variable so calls made by code that does not know about it (a token refresh
inside a FHIR request, a vault minting a backend token) spend from the budget of the request they run in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import httpx

from connectors.errors import ConfigurationError

__all__ = [
    "CallBudget",
    "RateLimitedTransport",
    "RateLimiter",
    "active_rate_budget",
    "rate_budget",
    "rate_scope",
    "spend_rate_budget",
]


class CallBudget(Protocol):
    """What spends a vendor's call budget: this process's :class:`RateLimiter`, or one shared by every process
    through the app database (``store.rate_windows``, for budgets such as eCW's that count every caller)."""

    def acquire(self, key: str) -> float:
        """Block until one call under ``key`` is allowed; return the seconds waited."""
        ...


class RateLimiter:
    """Thread-safe token buckets, one per key (e.g. eCW: 240 calls/min per practice base URL).

    ``acquire`` blocks until a token is free. One limiter shared by the FHIR client, the bulk client and the
    token endpoint (every EHR client's :class:`RateLimitedTransport`) keeps all of them under one budget.
    """

    def __init__(
        self,
        capacity: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if capacity < 1 or per_seconds <= 0:
            raise ConfigurationError("RateLimiter needs capacity >= 1 and per_seconds > 0")
        self.capacity = capacity
        self.per_seconds = per_seconds
        self._rate = capacity / per_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def _reserve(self, key: str) -> float:
        """Take one token now (possibly going negative) and return how long the caller must wait."""
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.get(key, (float(self.capacity), now))
            tokens = min(float(self.capacity), tokens + (now - stamp) * self._rate) - 1.0
            self._buckets[key] = (tokens, now)
            return 0.0 if tokens >= 0 else -tokens / self._rate

    def acquire(self, key: str) -> float:
        """Block until one call under ``key`` is allowed; returns the seconds waited."""
        wait = self._reserve(key)
        if wait > 0:
            self._sleep(wait)
        return wait


_RATE: ContextVar[tuple[CallBudget, str] | None] = ContextVar("ehrsync_rate_budget", default=None)


#: The key of the innermost :func:`rate_budget` block, with or without a limiter: the scope the EHR's own quota
#: headers are kept under (:mod:`connectors.transport.quota`), so they follow the vendor's budget key.
_SCOPE: ContextVar[str | None] = ContextVar("ehrsync_rate_scope", default=None)


@contextmanager
def rate_budget(limiter: CallBudget | None, key: str) -> Iterator[None]:
    """Within this block, every EHR call (FHIR, Bulk, token endpoint) spends from ``limiter`` under ``key`` (none
    without one: a budget active around the block still counts them), and ``key`` scopes the EHR's quota headers."""
    scope = _SCOPE.set(key)
    token = None if limiter is None else _RATE.set((limiter, key))
    try:
        yield
    finally:
        if token is not None:
            _RATE.reset(token)
        _SCOPE.reset(scope)


def rate_scope() -> str | None:
    """The key of the innermost :func:`rate_budget` block (None outside one)."""
    return _SCOPE.get()


def active_rate_budget() -> bool:
    """Whether calls made here already spend from a budget (:func:`rate_budget`)."""
    return _RATE.get() is not None


def spend_rate_budget() -> float:
    """Take one call from the active rate budget (blocking while it is spent); seconds waited, 0 without one."""
    active = _RATE.get()
    if active is None:
        return 0.0
    limiter, key = active
    return limiter.acquire(key)


class RateLimitedTransport(httpx.BaseTransport):
    """Wraps a transport so every request spends one call: from ``limiter`` under ``key`` when given, else
    from the budget active where the request is sent (:func:`rate_budget`), the EHR clients' default."""

    def __init__(self, inner: httpx.BaseTransport, limiter: CallBudget | None = None, key: str = "") -> None:
        self._inner = inner
        self._limiter = limiter
        self._key = key

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._limiter is not None:
            self._limiter.acquire(self._key)
        else:
            spend_rate_budget()
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
