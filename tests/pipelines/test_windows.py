"""Preferred sync windows per EHR source (EHRSYNC_SYNC_WINDOWS): parsing and membership tables."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.errors import PipelineConfigurationError
from engine.sync_windows import parse_sync_windows, parse_window


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 25, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "moment", "inside"),
    [
        ("22:00-06:00", _at(22, 0), True),  # start is inclusive
        ("22:00-06:00", _at(23, 59), True),
        ("22:00-06:00", _at(0, 0), True),  # wraps past midnight
        ("22:00-06:00", _at(5, 59), True),
        ("22:00-06:00", _at(6, 0), False),  # end is exclusive
        ("22:00-06:00", _at(12, 0), False),
        ("22:00-06:00", _at(21, 59), False),
        ("09:00-17:30", _at(9, 0), True),
        ("09:00-17:30", _at(17, 29), True),
        ("09:00-17:30", _at(17, 30), False),
        ("09:00-17:30", _at(8, 59), False),
        ("00:00-24:00", _at(0, 0), True),  # all day
        ("00:00-24:00", _at(23, 59), True),
        ("1:00-2:00", _at(1, 30), True),  # one-digit hours
        # 22:00-06:00 in Chicago is 04:00-12:00 UTC in November (CST, UTC-6).
        ("22:00-06:00 America/Chicago", _at(4, 0), True),
        ("22:00-06:00 America/Chicago", _at(11, 59), True),
        ("22:00-06:00 America/Chicago", _at(12, 0), False),
        ("22:00-06:00 America/Chicago", _at(23, 0), False),
        ("22:00-06:00 UTC", _at(23, 0), True),
    ],
)
def test_window_contains(window: str, moment: datetime, inside: bool) -> None:
    assert parse_window(window).contains(moment) is inside


def test_window_compares_in_its_own_zone_whatever_the_input_zone() -> None:
    window = parse_window("22:00-06:00")
    tokyo = datetime(2026, 11, 26, 8, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 23:00 UTC the day before
    assert window.contains(tokyo)


def test_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_window("22:00-06:00").contains(datetime(2026, 1, 1, 23, 0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("22-06", "is not 'HH:MM-HH:MM'"),
        ("", "is not 'HH:MM-HH:MM'"),
        ("25:00-06:00", "25:00 is not a time of day"),
        ("22:61-06:00", "22:61 is not a time of day"),
        ("24:00-06:00", "cannot start at 24:00"),
        ("08:00-08:00", "is empty"),
        ("22:00-06:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_window_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(PipelineConfigurationError, match=message.replace("(", r"\(")):
        parse_window(text)


def test_parse_sync_windows_per_source() -> None:
    windows = parse_sync_windows(
        '{"epic": "22:00-06:00", "cerner": "01:00-05:00 America/New_York", "smart": "1:00-2:00"}'
    )
    assert set(windows) == {"epic", "cerner", "smart"}
    assert windows["epic"].contains(_at(23))
    assert not windows["epic"].contains(_at(12))
    assert windows["epic"].describe() == "22:00-06:00 UTC"


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_windows_mean_none(raw: str | None) -> None:
    assert parse_sync_windows(raw) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "EHRSYNC_SYNC_WINDOWS is not valid JSON"),
        ('["22:00-06:00"]', "must be a JSON object"),
        ('{"epic": 22}', r"EHRSYNC_SYNC_WINDOWS\['epic'\] must be a string"),
        ('{"epic": "late"}', "is not 'HH:MM-HH:MM'"),
        # a source no connection can have (a typo, a vendor's name for a plugin id): its window was ignored and
        # the source's syncs ran at any hour
        ('{"Epic": "22:00-06:00"}', r"EHRSYNC_SYNC_WINDOWS\['Epic'\]: no EHR source is called so \(known: athena, "),
        ('{"oracle": "22:00-06:00"}', r"EHRSYNC_SYNC_WINDOWS\['oracle'\]: no EHR source .* cerner, .* smart\)"),
    ],
)
def test_bad_windows_env_names_the_variable(raw: str, message: str) -> None:
    with pytest.raises(PipelineConfigurationError, match=message):
        parse_sync_windows(raw)


def test_a_source_named_twice_is_refused_not_the_last_taken() -> None:
    """JSON with ``epic`` twice kept only the later window: the operator's first one (22:00-06:00 here) was dropped
    without a word and Epic synced 01:00-02:00 only. Now one line naming the source, as a tenant seed naming a
    tenant twice is refused."""
    raw = '{"epic": "22:00-06:00", "cerner": "23:00-05:00", "epic": "01:00-02:00"}'
    with pytest.raises(PipelineConfigurationError) as caught:
        parse_sync_windows(raw)
    assert str(caught.value) == "EHRSYNC_SYNC_WINDOWS names 'epic' more than once (one window per source)"
