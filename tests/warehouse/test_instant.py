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
