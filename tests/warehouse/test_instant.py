"""BDX-23: ``meta.lastUpdated`` must be a FHIR instant (seconds and zone required); anything else quarantines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from warehouse._lines import parse_instant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05.1Z", datetime(2026, 1, 2, 3, 4, 5, 100000, tzinfo=UTC)),
        ("2026-01-02T03:04:05.123456789Z", datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2026-01-02T03:04:05+02:00", datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05.5-05:30", datetime(2026, 1, 2, 8, 34, 5, 500000, tzinfo=UTC)),
    ],
)
def test_valid_instants_normalise_to_utc(text: str, expected: datetime) -> None:
    got = parse_instant(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02",
        "2026-01-02T03:04:05",  # no zone
        "2026-01-02T03:04Z",  # no seconds
        "2026-01-02 03:04:05Z",  # space separator
        "20260102T030405Z",  # basic format
        "2026-01-02T03:04:05+0100",
        "2026-01-02T03:04:05+01",
        "2026-01-02T03:04:05.Z",
        "2026-01-02T03:04:05.12aZ",
        "2026-02-30T03:04:05Z",
        "2026-01-02T25:04:05Z",
        "２026-01-02T03:04:05Z",  # non-ASCII digit
        "",
    ],
)
def test_malformed_instants_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a FHIR instant"):
        parse_instant(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2016-12-31T23:59:60.5Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2016-12-31T23:59:60.123456789Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2017-01-01T00:59:60+01:00", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),  # offset kept
        ("2017-01-01T00:59:60.5+01:00", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-01-02T03:04:60.25-05:30", datetime(2026, 1, 2, 8, 34, 59, 999999, tzinfo=UTC)),  # any minute
    ],
)
def test_bdx23_leap_second_is_the_last_microsecond_of_its_minute(text: str, expected: datetime) -> None:
    """FHIR allows second 60 (https://hl7.org/fhir/R4/datatypes.html#instant): clamped down, never later than
    it was, so a resource stamped in a leap second lands instead of going to quarantine (BDX-23)."""
    got = parse_instant(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2016-12-31T23:59:61Z",
        "2016-12-31T23:59:70Z",
        "2016-12-31T23:60:00Z",  # minute 60 is no leap second
        "2016-12-31T23:59:60.Z",
        "2016-12-31T23:59:60.5x+01:00",
        "2016-12-31T23:59:60",  # no zone
        "2016-12-31T23:59:60+0100",
        "2016-12-31T24:59:60Z",
        "2016-02-30T23:59:60Z",
    ],
)
def test_leap_second_text_that_is_no_instant_is_still_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a FHIR instant"):
        parse_instant(text)
