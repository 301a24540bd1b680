"""The rows and table ``ehrsync sync`` prints, from a run's materialization metadata and failed steps (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from ehrsync.progress import TypeRow, summary_lines, type_rows

REST: dict[str, dict[str, Any]] = {
    "landing/Observation": {"fetched": 12, "quarantined": 1, "skipped": False},
    "warehouse/Observation": {"created": 8, "updated": 2, "unchanged": 1, "skipped": False},
    "landing/Immunization": {"fetched": 0, "skipped": True, "skipped_reason": "scope_not_granted"},
    "warehouse/Immunization": {"created": 0, "skipped": True, "skipped_reason": "scope_not_granted"},
}
BULK: dict[str, dict[str, Any]] = {
    "bulk/export": {
        "files": 3,
        "fetched": 7,
        "per_type": {
            "Patient": {"fetched": 2, "created": 2, "updated": 0, "unchanged": 0, "quarantined": 0},
            "Condition": {"fetched": 5, "created": 4, "updated": 0, "unchanged": 0, "quarantined": 1},
        },
    }
}


@pytest.mark.parametrize(
    ("materializations", "step_errors", "expected"),
    [
        (
            REST,
            {},
            [TypeRow("Immunization", note="skipped: scope_not_granted"), TypeRow("Observation", 12, 8, 2, 1, 1)],
        ),
        (BULK, {}, [TypeRow("Condition", 5, 4, 0, 0, 1), TypeRow("Patient", 2, 2, 0, 0, 0)]),
        (
            {},
            {"landing__Condition": "connectors.errors.base.StepBudgetExceededError: landing Condition exceeded"},
            [TypeRow("Condition", note="failed: StepBudgetExceededError: landing Condition exceeded")],
        ),
        (
            {},
            {"referenced_resources": "reading references failed:\n ehr_unreachable: cannot reach the EHR"},
            [
                TypeRow(
                    "referenced_resources",
                    note="failed: reading references failed: ehr_unreachable: cannot reach the EHR",
                )
            ],
        ),
    ],
    ids=["rest", "bulk", "failed-type-step", "failed-shared-step"],
)
def test_type_rows(
    materializations: dict[str, dict[str, Any]], step_errors: dict[str, str], expected: list[TypeRow]
) -> None:
    assert type_rows(materializations, step_errors) == expected


def test_summary_has_a_row_per_type_the_totals_and_the_run() -> None:
    rows = type_rows(REST, {"warehouse__Observation": "boom"})
    lines = summary_lines(rows, run_id="r1", job_name="incremental_sync", success=False, failed_steps=("x",))
    assert lines[0].split() == ["type", "fetched", "created", "updated", "unchanged", "quarantined", "note"]
    assert [line.split()[0] for line in lines[2:4]] == ["Immunization", "Observation"]
    assert lines[3].split() == ["Observation", "12", "8", "2", "1", "1", "failed:", "boom"]
    assert lines[5].split() == ["total", "12", "8", "2", "1", "1"]
    assert set(lines[1]) == set(lines[4]) == {"-"}
    assert lines[-1] == "run r1 (incremental_sync) failed (steps: x)"
