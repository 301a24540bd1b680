"""When is a connection's next incremental sync due? Pure functions, tested as tables.

Each connection syncs every ``sync_frequency_hours`` (default 24, allowed 1 h to 7 days) counted from its
last completed sync (or its creation when it never completed one). A due sync starts only inside the
source's preferred window. Run keys name the frequency-aligned slot, so one slot asks for at most one
run however often the sensor ticks.

A connection whose latest runs failed (a killed worker, an EHR outage; its first sync too) is retried with
backoff instead of waiting for its next slot: after ``n`` consecutive failures the retry is due
``min(base * 2**(n - 1), cap)`` after the last one ended (``RetryBackoff``), inside the source's window,
whichever of the retry and the regular slot comes first. Neither comes before the time the EHR source said to come
back, when the connection's newest run noted one (``SourceHold``: a batch member deferred or stopped by its source's
throttle, or the connection's own run stopped by it); a deferred member is asked for again once that time has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from engine.sync_windows import SyncWindow

__all__ = [
    "DEFAULT_FREQUENCY_HOURS",
    "MAX_FREQUENCY_HOURS",
    "MIN_FREQUENCY_HOURS",
    "DueDecision",
    "DueReason",
    "FailureStreak",
    "RetryBackoff",
    "SourceHold",
    "decide_due",
    "decide_hold",
    "decide_retry",
    "effective_frequency",
    "slot_start",
]

DEFAULT_FREQUENCY_HOURS = 24
MIN_FREQUENCY_HOURS = 1
MAX_FREQUENCY_HOURS = 7 * 24
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_GRACE = timedelta(hours=1)


class DueReason(StrEnum):
    DUE = "due"
    NOT_YET = "not_yet"
    OUTSIDE_WINDOW = "outside_window"
    NO_REFERENCE = "no_reference"
    RETRY = "retry"
    BACKING_OFF = "backing_off"
    THROTTLED = "throttled"  # the EHR said to come back later (``SourceHold``)
    RESUME = "resume"  # a member deferred by its source's throttle, asked for again once it has passed


@dataclass(frozen=True)
class DueDecision:
    """The outcome for one connection at one tick; ``slot`` is set only when ``due``."""

    reason: DueReason
    next_due_at: datetime | None = None
    slot: datetime | None = None

    @property
    def due(self) -> bool:
        return self.reason in (DueReason.DUE, DueReason.RETRY, DueReason.RESUME)


@dataclass(frozen=True)
class FailureStreak:
    """A connection's failed runs since its last completed one: how many, and when the newest ended."""

    failures: int
    last_failed_at: datetime


@dataclass(frozen=True)
class SourceHold:
    """The connection's newest run noted when its EHR source said to come back (a throttle's Retry-After, a
    quota's reset): nothing is asked for before ``until``; ``deferred``: that run was never attempted."""

    until: datetime
    deferred: bool = False


def decide_hold(now: datetime, hold: SourceHold, window: SyncWindow | None) -> DueDecision | None:
    """``THROTTLED`` before the hold ends; after it, a deferred run is due again (``RESUME``, ``slot`` = the
    hold's end) inside the source's window; None: the hold has passed and the usual rules decide."""
    until = hold.until if hold.until.tzinfo is not None else hold.until.replace(tzinfo=UTC)
    if now < until:
        return DueDecision(DueReason.THROTTLED, next_due_at=until)
    if not hold.deferred:
        return None
    if window is not None and not window.contains(now):
        return DueDecision(DueReason.OUTSIDE_WINDOW, next_due_at=until)
    return DueDecision(DueReason.RESUME, next_due_at=until, slot=until)


@dataclass(frozen=True)
class RetryBackoff:
    """Exponential backoff of retries of failed syncs: ``min(base * 2**(n - 1), cap)`` after failure ``n``."""

    base: timedelta = timedelta(minutes=5)
    cap: timedelta = timedelta(hours=6)

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError(f"retry backoff needs 0 < base <= cap (base {self.base}, cap {self.cap})")

    def delay(self, failures: int) -> timedelta:
        """The wait after ``failures`` consecutive failures (1 → base, 2 → 2*base, ..., at most cap)."""
        if failures < 1:
            raise ValueError(f"a retry follows at least one failure, not {failures}")
        exponent = min(failures - 1, 32)  # 2**32 * base is past any cap; keeps the number small
        delay: timedelta = min(self.base * (2**exponent), self.cap)
        return delay


def effective_frequency(hours: int | None) -> timedelta:
    """The sync interval: unset means 24 h; values outside 1 h..7 days are clamped into that range."""
    if hours is None:
        hours = DEFAULT_FREQUENCY_HOURS
    return timedelta(hours=min(max(int(hours), MIN_FREQUENCY_HOURS), MAX_FREQUENCY_HOURS))


def _grace(frequency: timedelta) -> timedelta:
    # The sensor ticks every minute and a sync takes minutes: without slack each cycle would start one tick
    # later than the last and a daily sync would drift out of its window.
    return min(_MAX_GRACE, frequency / 4)


def slot_start(now: datetime, frequency: timedelta) -> datetime:
    """Start of the epoch-aligned slot of length ``frequency`` that contains ``now``."""
    if now.tzinfo is None:
        raise ValueError("slot_start needs a timezone-aware datetime")
    elapsed = now.astimezone(UTC) - _EPOCH
    return _EPOCH + (elapsed // frequency) * frequency


def decide_due(
    now: datetime,
    *,
    last_sync_at: datetime | None,
    created_at: datetime | None,
    frequency_hours: int | None,
    window: SyncWindow | None,
) -> DueDecision:
    """Decide whether a connection's incremental sync is due at ``now`` (all datetimes timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("decide_due needs a timezone-aware 'now'")
    reference = last_sync_at or created_at
    if reference is None:
        return DueDecision(DueReason.NO_REFERENCE)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    frequency = effective_frequency(frequency_hours)
    next_due = reference + frequency
    if now < next_due - _grace(frequency):
        return DueDecision(DueReason.NOT_YET, next_due_at=next_due)
    if window is not None and not window.contains(now):
        return DueDecision(DueReason.OUTSIDE_WINDOW, next_due_at=next_due)
    return DueDecision(DueReason.DUE, next_due_at=next_due, slot=slot_start(now, frequency))


def decide_retry(
    now: datetime,
    *,
    streak: FailureStreak,
    backoff: RetryBackoff,
    window: SyncWindow | None,
) -> DueDecision:
    """Is the retry of a connection whose last ``streak.failures`` runs failed due at ``now``?

    ``RETRY`` (``slot`` = the failure it retries) once the backoff has passed and the source's window is open;
    ``BACKING_OFF`` before; ``OUTSIDE_WINDOW`` when only the window holds it back.
    """
    if now.tzinfo is None:
        raise ValueError("decide_retry needs a timezone-aware 'now'")
    failed_at = streak.last_failed_at
    if failed_at.tzinfo is None:
        failed_at = failed_at.replace(tzinfo=UTC)
    retry_at = failed_at + backoff.delay(streak.failures)
    if now < retry_at:
        return DueDecision(DueReason.BACKING_OFF, next_due_at=retry_at)
    if window is not None and not window.contains(now):
        return DueDecision(DueReason.OUTSIDE_WINDOW, next_due_at=retry_at)
    return DueDecision(DueReason.RETRY, next_due_at=retry_at, slot=failed_at)
