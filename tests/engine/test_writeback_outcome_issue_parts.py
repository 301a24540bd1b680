"""DWB-51: an issue's lists (its expressions or locations, its ``details.coding`` codes) are capped at ``MAX_PARTS``
each, the first ``MAX_PARTS`` kept in order, and a cut list says so (``truncated``), whichever of the two was cut:
never dropped silently."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.transport.issue_record import MAX_PARTS, issue_record


@pytest.mark.parametrize(
    ("part", "count"),
    [
        ("expression", MAX_PARTS),
        ("expression", MAX_PARTS + 1),
        ("location", MAX_PARTS + 1),
        ("coding", MAX_PARTS),
        ("coding", MAX_PARTS + 1),
    ],
)
def test_dwb51_each_list_of_an_issue_is_capped_and_a_cut_one_says_so(part: str, count: int) -> None:
    """Exactly the first ``MAX_PARTS`` items are kept (a cap cutting more, or fewer, is caught), and ``truncated``
    is set exactly when items were left out."""
    where = [f"DocumentReference.x{n}" for n in range(count)] if part != "coding" else []
    codings = [{"system": "urn:oid:1.2.3", "code": str(n)} for n in range(count)] if part == "coding" else []
    codes = [f"{c['system']}|{c['code']}" for c in codings]
    issue: dict[str, Any] = {"severity": "error", "code": "invalid"}
    issue.update({"details": {"coding": codings}} if part == "coding" else {part: where})
    record = issue_record({"resourceType": "OperationOutcome", "issue": [issue]})
    assert record is not None
    [kept] = record["issues"]
    assert (kept["expression"], kept["codings"]) == (where[:MAX_PARTS], codes[:MAX_PARTS])
    assert kept["truncated"] is (count > MAX_PARTS)
