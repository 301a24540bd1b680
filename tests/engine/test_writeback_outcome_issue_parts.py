"""DWB-51: an issue's lists (its expressions or locations, its ``details.coding`` codes) are capped at ``MAX_PARTS``
each, and a cut list says so (``truncated``), whichever of the two was cut: never dropped silently."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.transport.issue_record import MAX_PARTS, issue_record


def _coding(n: int) -> dict[str, str]:
    return {"system": "urn:oid:1.2.3", "code": str(n)}


@pytest.mark.parametrize(
    ("issue", "truncated"),
    [
        ({"expression": [f"DocumentReference.x{n}" for n in range(MAX_PARTS)]}, False),
        ({"expression": [f"DocumentReference.x{n}" for n in range(MAX_PARTS + 1)]}, True),
        ({"location": [f"Line {n}" for n in range(MAX_PARTS + 1)]}, True),
        ({"details": {"coding": [_coding(n) for n in range(MAX_PARTS)]}}, False),
        ({"details": {"coding": [_coding(n) for n in range(MAX_PARTS + 1)]}}, True),
    ],
)
def test_dwb51_each_list_of_an_issue_is_capped_and_a_cut_one_says_so(issue: dict[str, Any], truncated: bool) -> None:
    record = issue_record({"resourceType": "OperationOutcome", "issue": [{"severity": "error", **issue}]})
    assert record is not None
    [kept] = record["issues"]
    assert len(kept["expression"]) <= MAX_PARTS and len(kept["codings"]) <= MAX_PARTS
    assert kept["truncated"] is truncated
