"""Report → metadata and the asset-check verdicts (quarantine threshold, duplicate keys, BDX-20 counts)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
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


def test_manifest_counts_verdict_names_at_most_100_mismatched_files_bdx20() -> None:
    """An export of up to EHRSYNC_BULK_MAX_FILES files may have thousands whose count is off: the check names the
    first 100 and says how many more (``mismatched`` counts them all). Before, every one was named: 20,000 entries
    were ~3 MB of Dagster metadata for one run."""
    files = [FileCount(f"https://x/{n}.ndjson", "Observation", 5, 4) for n in range(250)]
    verdict = manifest_counts_verdict([FileCount("https://x/ok.ndjson", "Patient", 1, 1), *files])
    assert not verdict.passed and verdict.metadata["mismatched"] == 250
    named = verdict.metadata["mismatches"]
    assert len(named) == 101 and named[-1] == "and 150 more"
    assert named[0] == {"url": "https://x/0.ndjson", "type": "Observation", "manifest_count": 5, "lines": 4}
    assert named[99]["url"] == "https://x/99.ndjson"
    exactly = manifest_counts_verdict(files[:100]).metadata["mismatches"]
    assert len(exactly) == 100 and "more" not in str(exactly[-1])


def test_a_bulk_reports_count_mismatches_name_at_most_100_files_and_count_them_all_bdx20() -> None:
    """The report (and the check metadata built from it) names the first 100 files whose count is off, a follow-up
    export's (BDX-15) included, and counts every one."""
    report, follow_up = BulkReport(run_id="r", connection_id="c"), BulkReport(run_id="r", connection_id="c")
    for n in range(90):
        report.note_count_mismatch(f"https://x/{n}.ndjson: manifest count 2, file had 3 lines")
    for n in range(90, 250):
        follow_up.note_count_mismatch(f"https://x/{n}.ndjson: manifest count 2, file had 3 lines")
    assert (len(follow_up.count_mismatches), follow_up.count_mismatched) == (100, 160)
    report.absorb(follow_up)
    assert (len(report.count_mismatches), report.count_mismatched) == (100, 250)
    named = report.named_count_mismatches()
    assert named[-1] == "and 150 more" and named[99].startswith("https://x/99.ndjson")
    assert len(orjson.dumps(named)) < 10_000
