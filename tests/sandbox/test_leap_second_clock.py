"""The sandbox's ``clock_leap_second`` knob: server-clock stamps in the leap second ending the minute before now,
``hh:mm:60.fffZ`` (FHIR R4 allows second 60), never later than now and sorting as the moment they name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox.clock import Clock
from sandbox.data.timefmt import instant_of, leap_instant_of

NOW = datetime(2017, 1, 1, 0, 0, 12, 345678, tzinfo=UTC)


def test_leap_stamp_is_the_leap_second_before_the_minute_and_sorts_in_place() -> None:
    stamp = leap_instant_of(NOW)
    assert stamp == "2016-12-31T23:59:60.345Z"
    assert len(stamp) == len(instant_of(NOW))  # fixed width: the sandbox compares stamps as text
    minute = NOW.replace(second=0, microsecond=0)
    assert instant_of(minute - timedelta(microseconds=1000)) < stamp < instant_of(minute) <= instant_of(NOW)


def test_clock_stamps_follow_the_setting() -> None:
    clock = Clock()
    assert clock.stamp(NOW) == instant_of(NOW)
    clock.leap_second = True
    assert clock.stamp(NOW) == leap_instant_of(NOW)
    assert clock.stamp()[17:19] == "60"
