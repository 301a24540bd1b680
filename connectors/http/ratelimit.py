"""A vendor's call budget (e.g. eCW: 240 calls/min per practice): token buckets, the budget active for the
current request (spent per attempt by :class:`connectors.transport.budget.BudgetTransport`).

A caller may bound the wait (``acquire(key, max_wait_s)``): when the next call under the key comes free only later,
nothing is taken and :class:`~connectors.errors.CallBudgetBusyError` is raised at once (``retry_after``: seconds
until it is free). The EHR layers bound it by a transfer's deadline, a SMART call's deadline and the sync step's
budget (:mod:`connectors.transport.budget`).

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

from connectors.errors import CallBudgetBusyError, ConfigurationError

__all__ = [
    "CallBudget",
    "RateLimiter",
    "active_rate_budget",
    "current_rate_budget",
    "rate_budget",
    "rate_scope",
    "spend_rate_budget",
]


class CallBudget(Protocol):
    """What spends a vendor's call budget: this process's :class:`RateLimiter`, or one shared by every process
    through the app database (``store.rate_windows``, for budgets such as eCW's that count every caller)."""

    def acquire(self, key: str, max_wait_s: float | None = None) -> float:
        """Block until one call under ``key`` is allowed; return the seconds waited. When that would take longer
        than ``max_wait_s``, take nothing and raise CallBudgetBusyError at once (``retry_after``: the wait)."""
        ...


class RateLimiter:
    """Thread-safe token buckets, one per key (e.g. eCW: 240 calls/min per practice base URL).

    ``acquire`` blocks until a token is free. One limiter shared by the FHIR client, the bulk client and the
    token endpoint (every EHR client's ``BudgetTransport``) keeps all of them under one budget.
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

    def _reserve(self, key: str, max_wait_s: float | None) -> tuple[float, bool]:
        """How long the caller must wait for one token, and whether it took it now (possibly going negative): not
        when the wait is longer than ``max_wait_s``."""
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.get(key, (float(self.capacity), now))
            tokens = min(float(self.capacity), tokens + (now - stamp) * self._rate) - 1.0
            wait = 0.0 if tokens >= 0 else -tokens / self._rate
            if max_wait_s is not None and wait > max_wait_s:
                return wait, False
            self._buckets[key] = (tokens, now)
            return wait, True

    def acquire(self, key: str, max_wait_s: float | None = None) -> float:
        """Block until one call under ``key`` is allowed; returns the seconds waited. CallBudgetBusyError, nothing
        taken, when that would be longer than ``max_wait_s``."""
        wait, taken = self._reserve(key, max_wait_s)
        if not taken:
            raise CallBudgetBusyError(
                f"the EHR's call budget ({self.capacity} calls per {self.per_seconds:g} s) has no free call for "
                f"{wait:.1f} s, longer than the {max_wait_s:.1f} s the request may wait; nothing was sent",
                retry_after=wait,
            )
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


def current_rate_budget() -> tuple[CallBudget, str] | None:
    """The budget calls made here spend from and its key (:func:`rate_budget`), None without one."""
    return _RATE.get()


def spend_rate_budget() -> float:
    """Take one call from the active rate budget (blocking while it is spent); seconds waited, 0 without one."""
    active = _RATE.get()
    if active is None:
        return 0.0
    limiter, key = active
    return limiter.acquire(key)
