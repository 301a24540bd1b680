"""The landing → warehouse handoff: a versioned value that round-trips, reads what older code wrote, and refuses
what it cannot read with an error naming the problem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.handoff import (
    HANDOFF_VERSION,
    AttachmentLink,
    HandoffError,
    LandingHandoff,
    LandingSummary,
    landed_from_json,
    landed_to_json,
)
from engine.reports import TypeReport
from warehouse import LandedFile

LANDED = LandedFile(
    path=Path("/state/landing/c1/Observation/r1-rest.parquet"),
    rows=3,
    bytes=1200,
    quarantined=1,
    quarantine_path=Path("/state/landing/c1/Observation/r1-rest.quarantine.parquet"),
    max_last_updated=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    resource_type="Observation",
    connection_id="c1",
    run_id="r1",
    source="https://ehr.example.org/fhir/Observation",
    tenant_id="t1",
)
SHA = "ab" * 32


def _report() -> TypeReport:
    report = TypeReport("Observation", fetched=4, quarantined=1, bytes=1200, pages=2, files=1, attachments=1)
    report.duration_s = 1.5
    report.incomplete = True
    report.error = "search_incomplete: stopped early"
    report.warnings = ["recovered: narrower windows"]
    return report


def _handoff() -> LandingHandoff:
    return LandingHandoff(
        files=(LANDED,),
        summary=LandingSummary.of(_report()),
        references=("Organization/o1", "Practitioner/p1"),
        attachments=(AttachmentLink("https://ehr.example.org/fhir/Binary/b1", SHA, 10, "application/pdf"),),
    )


def test_handoff_round_trips_through_stored_json():
    handoff = _handoff()
    stored = orjson.loads(orjson.dumps(handoff.to_json()))  # as the JSON column gives it back
    assert stored["version"] == HANDOFF_VERSION
    assert LandingHandoff.from_json(stored) == handoff


def test_summary_rebuilds_the_landing_report_without_its_duration():
    report = LandingHandoff.from_json(_handoff().to_json()).summary.report("Observation")
    assert (report.fetched, report.quarantined, report.bytes, report.pages, report.files) == (4, 1, 1200, 2, 1)
    assert report.attachments == 1 and report.incomplete and report.error == "search_incomplete: stopped early"
    assert report.warnings == ["recovered: narrower windows"] and report.duration_s == 0.0


def test_blob_written_before_the_version_field_reads_as_version_1():
    """The exact shape the engine stored before the handoff was typed: no version, the report as metadata."""
    old: dict[str, Any] = {
        "files": [landed_to_json(LANDED)],
        "report": {**_report().as_metadata(), "high_water_mark": "2026-03-01T12:00:00+00:00"},
        "references": ["Organization/o1", "Practitioner/p1"],
        "attachments": [
            {
                "url": "https://ehr.example.org/fhir/Binary/b1",
                "sha256": SHA,
                "size": 10,
                "content_type": "application/pdf",
            }
        ],
    }
    assert LandingHandoff.from_json(old) == _handoff()
    skipped = {"files": [], "report": TypeReport("Goal", skipped_reason="scope_not_granted").as_metadata()}
    read = LandingHandoff.from_json({**skipped, "references": [], "attachments": []})
    assert read.version == 1 and read.files == () and read.summary.skipped_reason == "scope_not_granted"
    assert LandingHandoff.from_json({"files": []}) == LandingHandoff()


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    blob: Any = _handoff().to_json()
    node = blob
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return dict(blob)


@pytest.mark.parametrize(
    ("blob", "named"),
    [
        ([1, 2], "landing handoff must be a JSON object"),
        (_with(("version",), 2), "version 2 is not supported"),
        (_with(("version",), "1"), "landing handoff.version must be an integer"),
        (_with(("files",), {"path": "x"}), "landing handoff.files must be a list"),
        (_with(("files", 0, "rows"), "3"), "landing handoff.files[0].rows must be an integer"),
        (_with(("files", 0, "path"), None), "landing handoff.files[0].path must be a string"),
        (_with(("files", 0, "max_last_updated"), "yesterday"), "files[0].max_last_updated is not an ISO instant"),
        (_with(("report",), "done"), "landing handoff.report must be a JSON object"),
        (_with(("report", "fetched"), True), "landing handoff.report.fetched must be an integer"),
        (_with(("references",), ["Organization/o1", 7]), "references must hold strings"),
        (_with(("attachments", 0, "size"), None), "landing handoff.attachments[0].size must be an integer"),
    ],
)
def test_bad_blob_is_refused_with_an_error_naming_the_problem(blob: Any, named: str):
    with pytest.raises(HandoffError, match=named.replace("[", r"\[").replace("]", r"\]")) as caught:
        LandingHandoff.from_json(blob)
    assert caught.value.code == "landing_handoff_invalid"


def test_landed_file_json_round_trips_and_names_a_bad_field():
    assert landed_from_json(landed_to_json(LANDED)) == LANDED
    with pytest.raises(HandoffError, match=r"bulk file 7\.connection_id must be a string"):
        landed_from_json({**landed_to_json(LANDED), "connection_id": 5}, "bulk file 7")
