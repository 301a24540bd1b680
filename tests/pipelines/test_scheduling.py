"""Due logic of scheduled incremental syncs: per-connection frequency, grace, slots and windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.scheduling import DueReason, SourceHold, decide_due, decide_hold, effective_frequency, slot_start
from engine.sync_windows import SyncWindow, parse_window

NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
H = timedelta(hours=1)
NIGHT = parse_window("22:00-06:00")
DAY = parse_window("09:00-17:00")


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (None, timedelta(hours=24)),  # default
        (1, timedelta(hours=1)),
        (24, timedelta(hours=24)),
        (168, timedelta(days=7)),
        (0, timedelta(hours=1)),  # clamped up to 1 h
        (-5, timedelta(hours=1)),
        (1000, timedelta(days=7)),  # clamped down to 7 days
    ],
)
def test_effective_frequency(hours: int | None, expected: timedelta) -> None:
    assert effective_frequency(hours) == expected


@pytest.mark.parametrize(
    ("last_sync", "created", "freq", "window", "reason"),
    [
        (NOW - 25 * H, None, 24, None, DueReason.DUE),
        (NOW - 24 * H, None, 24, None, DueReason.DUE),
        (NOW - 23 * H, None, 24, None, DueReason.DUE),  # within the 1 h grace: no drift by one tick a day
        (NOW - 22 * H, None, 24, None, DueReason.NOT_YET),
        (NOW - 2 * H, None, 1, None, DueReason.DUE),
        (NOW - 50 * 60 * timedelta(seconds=1), None, 1, None, DueReason.DUE),  # 50 min: 15 min grace at 1 h
        (NOW - 40 * 60 * timedelta(seconds=1), None, 1, None, DueReason.NOT_YET),
        (NOW - 6 * 24 * H, None, 168, None, DueReason.NOT_YET),
        (NOW - 7 * 24 * H, None, 168, None, DueReason.DUE),
        (None, NOW - 30 * H, 24, None, DueReason.DUE),  # never synced: counted from creation
        (None, NOW - 2 * H, 24, None, DueReason.NOT_YET),
        (None, None, 24, None, DueReason.NO_REFERENCE),
        (NOW - 30 * H, None, None, None, DueReason.DUE),  # default 24 h
        (NOW - 30 * H, None, 24, NIGHT, DueReason.DUE),  # 23:00 is inside 22:00-06:00
        (NOW - 30 * H, None, 24, DAY, DueReason.OUTSIDE_WINDOW),
        (NOW - 2 * H, None, 24, DAY, DueReason.NOT_YET),  # not due is reported before the window
    ],
)
def test_decide_due(
    last_sync: datetime | None,
    created: datetime | None,
    freq: int | None,
    window: SyncWindow | None,
    reason: DueReason,
) -> None:
    decision = decide_due(NOW, last_sync_at=last_sync, created_at=created, frequency_hours=freq, window=window)
    assert decision.reason is reason
    assert decision.due is (reason is DueReason.DUE)
    assert (decision.slot is not None) is decision.due


def test_naive_last_sync_is_read_as_utc() -> None:
    naive = (NOW - 25 * H).replace(tzinfo=None)
    assert decide_due(NOW, last_sync_at=naive, created_at=None, frequency_hours=24, window=None).due


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_due(NOW.replace(tzinfo=None), last_sync_at=None, created_at=None, frequency_hours=24, window=None)


@pytest.mark.parametrize(
    ("now", "freq_h", "expected"),
    [
        (datetime(2026, 11, 25, 23, 0, tzinfo=UTC), 24, datetime(2026, 11, 25, tzinfo=UTC)),
        (datetime(2026, 11, 25, 23, 59, tzinfo=UTC), 1, datetime(2026, 11, 25, 23, tzinfo=UTC)),
        (datetime(2026, 11, 25, 0, 0, tzinfo=UTC), 24, datetime(2026, 11, 25, tzinfo=UTC)),
        (datetime(2026, 11, 25, 13, 0, tzinfo=UTC), 6, datetime(2026, 11, 25, 12, tzinfo=UTC)),
    ],
)
def test_slot_start(now: datetime, freq_h: int, expected: datetime) -> None:
    assert slot_start(now, timedelta(hours=freq_h)) == expected


def test_repeated_ticks_in_one_slot_share_the_slot_and_a_new_slot_differs() -> None:
    def due_at(now: datetime) -> datetime | None:
        return decide_due(now, last_sync_at=NOW - 48 * H, created_at=None, frequency_hours=24, window=None).slot

    first, again, next_day = due_at(NOW), due_at(NOW + 30 * timedelta(minutes=1)), due_at(NOW + 2 * H)
    assert first is not None
    assert first == again
    assert next_day is not None
    assert next_day > first


_UNTIL = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "deferred", "window", "reason"),
    [
        (_UNTIL - timedelta(seconds=1), True, None, DueReason.THROTTLED),  # the source said not yet
        (_UNTIL - timedelta(seconds=1), False, None, DueReason.THROTTLED),  # nor the failed member's retry
        (_UNTIL, True, None, DueReason.RESUME),  # deferred: asked for again once it has passed
        (_UNTIL, True, "22:00-06:00", DueReason.OUTSIDE_WINDOW),  # ...inside its source's window
        (_UNTIL, False, None, None),  # a failure's hold passed: the usual retry rules decide
    ],
)
def test_a_source_hold_comes_before_slot_and_retry(
    now: datetime, deferred: bool, window: str | None, reason: DueReason | None
) -> None:
    decision = decide_hold(now, SourceHold(_UNTIL, deferred), parse_window(window) if window else None)
    assert (decision.reason if decision else None) is reason
    if reason is DueReason.RESUME:
        assert decision is not None and decision.slot == _UNTIL
