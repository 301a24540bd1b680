"""Report → metadata and the asset-check verdicts (quarantine threshold, duplicate keys, BDX-20 counts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import BulkReport, TypeReport
from pipelines.defs._shared.metadata import (
    FileCount,
    bulk_report_metadata,
    duplicate_keys_verdict,
    manifest_counts_verdict,
    quarantine_verdict,
    type_report_metadata,
)


@pytest.mark.parametrize(
    ("fetched", "quarantined", "ratio", "passed"),
    [
        (0, 0, 0.01, True),
        (100, 0, 0.0, True),
        (100, 1, 0.01, True),  # exactly at the threshold
        (100, 2, 0.01, False),
        (1000, 5, 0.01, True),
        (0, 3, 0.5, False),  # everything quarantined
        (10, 10, 1.0, True),
    ],
)
def test_quarantine_verdict(fetched: int, quarantined: int, ratio: float, passed: bool) -> None:
    verdict = quarantine_verdict(fetched, quarantined, ratio)
    assert verdict.passed is passed
    assert verdict.metadata["quarantined"] == quarantined


@pytest.mark.parametrize(("rows", "distinct", "passed"), [(0, 0, True), (5, 5, True), (6, 5, False)])
def test_duplicate_keys_verdict(rows: int, distinct: int, passed: bool) -> None:
    verdict = duplicate_keys_verdict(rows, distinct)
    assert verdict.passed is passed
    assert verdict.metadata["duplicates"] == rows - distinct


def test_manifest_counts_verdict_bdx20() -> None:
    files = [
        FileCount("https://x/1.ndjson", "Patient", 10, 10),
        FileCount("https://x/2.ndjson", "Observation", None, 7),  # no count given: nothing to compare
        FileCount("https://x/3.ndjson", "Observation", 5, 4),
    ]
    verdict = manifest_counts_verdict(files)
    assert not verdict.passed
    assert verdict.metadata["mismatched"] == 1
    assert verdict.metadata["without_count"] == 1
    assert verdict.metadata["mismatches"] == [
        {"url": "https://x/3.ndjson", "type": "Observation", "manifest_count": 5, "lines": 4}
    ]
    assert manifest_counts_verdict(files[:2]).passed
    assert manifest_counts_verdict([]).passed


def test_type_report_metadata_carries_counts_mark_and_skip() -> None:
    mark = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    report = TypeReport("Observation", fetched=12, created=10, updated=2, bytes=2048, pages=3, high_water_mark=mark)
    meta = type_report_metadata(report)
    assert meta["fetched"].value == 12
    assert meta["created"].value == 10
    assert meta["pages"].value == 3
    assert meta["high_water_mark"].value == mark.isoformat()
    assert meta["skipped"].value is False
    skipped = type_report_metadata(TypeReport("Immunization", skipped_reason="scope_not_granted"))
    assert skipped["skipped"].value is True
    assert skipped["skipped_reason"].value == "scope_not_granted"
    assert skipped["high_water_mark"].value == "none"


def test_bulk_report_metadata_sums_types() -> None:
    report = BulkReport(run_id="r", connection_id="c", job_id="j1", status="completed", files=3)
    report.types["Patient"] = TypeReport("Patient", fetched=4, created=4, bytes=100)
    report.types["Observation"] = TypeReport("Observation", fetched=6, created=5, updated=1, bytes=300)
    meta = bulk_report_metadata(report)
    assert meta["fetched"].value == 10
    assert meta["created"].value == 9
    assert meta["bytes"].value == 400
    assert meta["files"].value == 3
    assert meta["job_id"].value == "j1"
    assert set(meta["per_type"].value) == {"Patient", "Observation"}  # type: ignore[arg-type]
