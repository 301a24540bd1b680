"""The one retry policy: how many attempts, and how long to wait between them (BDX-10).

The EHR transport (:mod:`connectors.transport`) and the token vault's grant retries both use it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.errors import ConfigurationError
from connectors.http.dates import parse_retry_after

__all__ = ["RetryPolicy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between attempts; ``sleep``/``clock``/``rng`` are injectable so tests never really wait.

    Defaults follow BDX-10: Retry-After clamped to [2 s, 15 min]; absent, unparseable, negative, past or absurd
    (more than ``retry_after_absurd_s``) values fall back to exponential backoff 2 s ×2 capped at 5 min, ±20 %.
    ``full_jitter`` draws each backoff uniformly from zero to its cap instead (spreads many clients apart).
    """

    max_attempts: int = 5
    retry_after_min_s: float = 2.0
    retry_after_max_s: float = 900.0
    retry_after_absurd_s: float = 3600.0
    backoff_start_s: float = 2.0
    backoff_factor: float = 2.0
    backoff_cap_s: float = 300.0
    jitter: float = 0.2
    full_jitter: bool = False
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be at least 1")
        if not 0 < self.retry_after_min_s <= self.retry_after_max_s <= self.retry_after_absurd_s:
            raise ConfigurationError("RetryPolicy needs 0 < retry_after_min_s <= retry_after_max_s <= absurd")
        if self.backoff_start_s < 0 or self.backoff_factor < 1 or self.backoff_cap_s < self.backoff_start_s:
            raise ConfigurationError("RetryPolicy backoff needs start >= 0, factor >= 1, cap >= start")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("RetryPolicy.jitter must be in [0, 1)")

    def backoff_delay(self, attempt: int) -> float:
        """Exponential delay for the ``attempt``-th retry (0-based), capped, with ± jitter (or full jitter)."""
        base = min(self.backoff_start_s * self.backoff_factor ** max(attempt, 0), self.backoff_cap_s)
        if self.full_jitter:
            return self.rng.uniform(0, base)
        spread = base * self.jitter
        return max(0.0, base + self.rng.uniform(-spread, spread))

    def delay_for(self, attempt: int, retry_after: str | None) -> float:
        """Delay before the next attempt: the server's Retry-After header when sane, else backoff."""
        asked = self.asked_delay(retry_after)
        return self.backoff_delay(attempt) if asked is None else asked

    def asked_delay(self, retry_after: str | None) -> float | None:
        """The wait a Retry-After header asks for, clamped to [min, max]; None when it asks for none usable
        (absent, unparseable, negative, past or absurd), where :meth:`delay_for` backs off."""
        return self._clamped(self.asked_seconds(retry_after))

    def asked_seconds(self, retry_after: str | None) -> float | None:
        """The wait a Retry-After header asks for, not clamped: longer than ``retry_after_max_s``, it is longer than
        ehrsync waits for a throttle. None when it asks for none usable (absent, unparseable, negative, past or
        absurd: more than ``retry_after_absurd_s``)."""
        seconds = parse_retry_after(retry_after, now=self.wall_clock())
        if seconds is None and retry_after is not None:
            logger.info("ignoring unusable Retry-After, backing off", extra={"retry_after": retry_after[:64]})
        if seconds is None or seconds < 0 or seconds > self.retry_after_absurd_s:
            return None
        return seconds

    def delay_from_seconds(self, attempt: int, seconds: float | None) -> float:
        """Clamp an already parsed Retry-After to [min, max]; None or absurd values fall back to backoff."""
        clamped = self._clamped(seconds)
        return self.backoff_delay(attempt) if clamped is None else clamped

    def _clamped(self, seconds: float | None) -> float | None:
        if seconds is None or seconds < 0 or seconds > self.retry_after_absurd_s:
            return None
        return min(max(seconds, self.retry_after_min_s), self.retry_after_max_s)
