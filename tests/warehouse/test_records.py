"""BDX-22 error OperationOutcomes and quarantined lines land in tables, idempotently, on both backends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from tests.warehouse.conftest import resource
from warehouse import InvalidInputError, LandingZone, Warehouse

SRC = "https://ehr.example/bulk/err-1.ndjson"


def _outcome(*issues: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": s, "code": c, "diagnostics": d} for s, c, d in issues],
    }


def _errors(wh: Warehouse) -> list[tuple[object, ...]]:
    with wh._read() as cur:
        cur.execute(
            "SELECT line_number, severity, code, diagnostics, issue_count FROM fhir_errors ORDER BY line_number"
        )
        return cur.fetchmany(100)


def test_bdx22_error_outcomes_land_with_severity_counts(wh: Warehouse) -> None:
    lines: list[Mapping[str, Any] | bytes | str] = [
        orjson.dumps(_outcome(("warning", "informational", "Observation 9 skipped"))),
        b"\n",
        orjson.dumps(
            _outcome(("information", "informational", "note"), ("fatal", "exception", "patient 7 failed"))
        ),
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                        "details": {"text": "bad"}}]},
    ]  # fmt: skip
    counts = wh.record_errors("c1", "r1", SRC, lines)
    assert counts.outcomes == 3
    assert dict(counts.issues) == {"warning": 1, "information": 1, "fatal": 1, "error": 1}
    assert counts.failing == 2
    assert _errors(wh) == [
        (1, "warning", "informational", "Observation 9 skipped", 1),
        (3, "fatal", "exception", "patient 7 failed", 2),
        (4, "error", "processing", "bad", 1),
    ]
    wh.record_errors("c1", "r1", SRC, lines)  # replay: no duplicates
    assert len(_errors(wh)) == 3


def test_bdx22_non_outcome_line_is_a_clear_error(wh: Warehouse) -> None:
    with pytest.raises(InvalidInputError, match="line 2 is not an OperationOutcome"):
        wh.record_errors("c1", "r1", SRC, [orjson.dumps(_outcome()), orjson.dumps(resource("x"))])
    with pytest.raises(InvalidInputError, match="line 1 is not valid JSON"):
        wh.record_errors("c1", "r1", SRC, [b"{oops"])


def test_bdx20_upsert_also_lands_quarantine_rows_once(wh: Warehouse, zone: LandingZone) -> None:
    with zone.writer("c1", "Observation", "r1", SRC) as w:
        w.add_line(orjson.dumps(resource("a")))
        w.add_line(b"\xff\xfe not json")
        w.add_line(orjson.dumps(resource("b", resource_type="Patient")))
    landed = w.result
    wh.upsert(landed)
    assert wh.record_quarantine(landed) == 2  # replay is harmless
    with wh._read() as cur:
        cur.execute("SELECT line_number, error, raw_line, run_id FROM fhir_quarantine ORDER BY line_number")
        rows = cur.fetchmany(10)
    assert [(r[0], bytes(r[2]), r[3]) for r in rows] == [
        (2, b"\xff\xfe not json", "r1"),
        (3, orjson.dumps(resource("b", resource_type="Patient")), "r1"),
    ]
    assert "resourceType 'Patient'" in rows[1][1]
