"""Instants a server sends in a leap second (``23:59:60Z``, ``:60.5+01:00``; FHIR R4 allows second 60 in any
minute) are read as ``:59.999999`` of their minute, zone kept, then UTC: the manifest's ``transactionTime``, a
searchset's ``meta.lastUpdated`` and a deleted Bundle's ``meta.lastUpdated``. Clamped down, never later than the
moment named, so a cursor built from one never moves past data that was not received."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.bulk import iter_deleted_refs
from connectors.bulk.manifest import parse_manifest
from connectors.errors import BulkExportError
from connectors.fhir.search import parse_search_bundle
from connectors.http import parse_instant
from connectors.instants import clamp_leap_second
from tests.connectors.helpers import BASE, bundle

LAST = datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999Z"),
        ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.999999Z"),
        ("2016-12-31T23:59:60.123456789+01:00", "2016-12-31T23:59:59.999999+01:00"),
        ("2026-03-04T05:06:60-05:30", "2026-03-04T05:06:59.999999-05:30"),  # any minute
        ("2016-12-31T23:59:60", "2016-12-31T23:59:59.999999"),  # the zone is the parser's to require
        ("2016-12-31T23:59:60.Z", "2016-12-31T23:59:59.999999.Z"),  # a bare dot stays, for the parser to refuse
        ("2016-12-31T23:59:59.5Z", "2016-12-31T23:59:59.5Z"),
        ("2016-12-31T23:59:61Z", "2016-12-31T23:59:61Z"),
        ("2016-12-31T23:60:00Z", "2016-12-31T23:60:00Z"),
        ("2016-12-31T23:59+60:00", "2016-12-31T23:59+60:00"),
        ("2016-12-31", "2016-12-31"),
        ("", ""),
    ],
)
def test_clamp_leap_second_rewrites_only_second_60(text: str, expected: str) -> None:
    assert clamp_leap_second(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-12-31T23:59:60Z", LAST),
        ("2016-12-31T23:59:60.5z", LAST),
        ("2016-12-31T23:59:60.123456789Z", LAST),
        ("2017-01-01T00:59:60+01:00", LAST),
        ("2017-01-01T00:59:60.5+01:00", LAST),
        ("2026-03-04T05:06:60-05:30", datetime(2026, 3, 4, 10, 36, 59, 999999, tzinfo=UTC)),
        (" 2016-12-31T23:59:60Z ", LAST),
    ],
)
def test_leap_second_instant_is_the_last_microsecond_of_its_minute(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text", ["2016-12-31T23:59:61Z", "2016-12-31T23:59:70Z", "2016-12-31T23:59:60", "2016-12-31T24:59:60Z"]
)
def test_other_seconds_and_zone_less_leap_seconds_are_still_refused(text: str) -> None:
    assert parse_instant(text) is None


def _manifest(transaction_time: str) -> dict[str, Any]:
    return {
        "transactionTime": transaction_time,
        "request": f"{BASE}/Group/g1/$export",
        "requiresAccessToken": True,
        "output": [],
        "error": [],
    }


def test_bdx12_bdx14_manifest_transaction_time_in_a_leap_second_is_accepted_and_clamped_down() -> None:
    """A manifest stamped in a leap second is valid (BDX-12); its transactionTime, the next ``_since`` (BDX-14),
    is the last microsecond before the next minute, never past the moment the server named."""
    assert parse_manifest(_manifest("2017-01-01T00:59:60.5+01:00")).transaction_time == LAST
    with pytest.raises(BulkExportError, match="transactionTime"):
        parse_manifest(_manifest("2016-12-31T23:59:61Z"))


def test_bdx27_search_mark_in_a_leap_second_is_the_servers_clamped_down() -> None:
    """The high-water mark stays the server's ``meta.lastUpdated`` (BDX-27) when it names a leap second, instead
    of falling back to the later ``Date`` header."""
    page = parse_search_bundle(
        f"{BASE}/Observation", bundle([], last_updated="2016-12-31T23:59:60Z"), "Sun, 01 Jan 2017 00:00:30 GMT"
    )
    assert page.bundle_meta_last_updated == LAST
    assert page.high_water_mark == LAST


def test_bdx21_deleted_bundle_in_a_leap_second_keeps_its_own_time(tmp_path: Path) -> None:
    """A tombstone is dated from its Bundle's ``meta.lastUpdated`` (BDX-21), a leap second included."""
    tx = datetime(2017, 1, 1, 9, 0, tzinfo=UTC)
    deleted = {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"lastUpdated": "2016-12-31T23:59:60.25Z"},
        "entry": [{"request": {"method": "DELETE", "url": "Observation/o1"}}],
    }
    path = tmp_path / "deleted.ndjson"
    path.write_bytes(orjson.dumps(deleted) + b"\n")
    assert [(r.id, r.deleted_at) for r in iter_deleted_refs(path, tx)] == [("o1", LAST)]
