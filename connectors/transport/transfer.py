"""A wall-clock deadline for a whole transfer: every attempt of one Bulk file, the waits between them and the
engine's fetches of it again, together (curl's ``--max-time`` beside its speed limit).

It runs from the transfer's first attempt and counts the attempts sent (a redirect followed is the same attempt).
The layers hold it to that deadline: no attempt starts past it (:meth:`TransferDeadline.check`), no wait before the
next attempt ends past it (:meth:`TransferDeadline.check_wait`: the transfer fails at once instead of sleeping), and
each attempt's socket waits are cut to what is left of it (``bounds.BodyBounds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from connectors.errors import TransferDeadlineError
from connectors.http.urls import redact_url

__all__ = ["TransferDeadline"]


@dataclass(eq=False)
class TransferDeadline:
    """``limit_s`` seconds on ``clock`` from :meth:`begin` (the first attempt) for the whole transfer; ``attempts``
    counts the attempts sent within it. One per transfer, shared by every attempt and wait of it."""

    limit_s: float
    clock: Callable[[], float] = time.monotonic
    started_at: float | None = None
    attempts: int = 0

    def begin(self) -> None:
        """Start the clock (the transfer's first attempt); later calls keep the first start."""
        if self.started_at is None:
            self.started_at = self.clock()

    @property
    def ends_at(self) -> float | None:
        """When the transfer must be done, on ``clock``; None until it began."""
        return None if self.started_at is None else self.started_at + self.limit_s

    def spent_s(self) -> float:
        """Seconds since the transfer began (0 before)."""
        return 0.0 if self.started_at is None else max(self.clock() - self.started_at, 0.0)

    def left_s(self) -> float:
        """Seconds left of the deadline (all of it before the transfer began, never below 0)."""
        return max(self.limit_s - self.spent_s(), 0.0)

    def check(self, method: str, url: str, received: int | None = None) -> None:
        """Raise TransferDeadlineError once the deadline has passed."""
        ends_at = self.ends_at
        if ends_at is not None and self.clock() >= ends_at:
            got = "" if received is None else f" ({received} bytes of this attempt received)"
            raise TransferDeadlineError(f"{method} {redact_url(url)} was not done by its transfer deadline{got}")

    def check_wait(self, method: str, url: str, wait_s: float, *, asked: bool = False) -> None:
        """Raise TransferDeadlineError now when a wait of ``wait_s`` before the next attempt would end past the
        deadline (``asked``: the server's Retry-After asked for it); waiting it out would only overshoot."""
        self.check(method, url)
        left = self.left_s()
        if wait_s > left:
            why = "the server asked to wait" if asked else "the next attempt was due after a wait of"
            raise TransferDeadlineError(
                f"{method} {redact_url(url)}: {why} {round(wait_s, 1):g} s and only {left:.1f} s were left of its "
                "transfer deadline"
            )
