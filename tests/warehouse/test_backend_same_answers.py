"""One input, both backends: DuckDB and PostgreSQL store and serve the same answers for values a type system could
mangle (ids that look like numbers, instants with offsets, many-digit decimals, huge integers, unicode), for one id
under two resource types, for late older versions (equal lastUpdated, numeric versionIds), and for deletion then
re-creation (with lastUpdated, and without it: answered before, at and after the deletion), and for the shapes
read by later columns and views (an effective period with only its end, effectiveTiming, onsetAge, allergy
reactions, every coding of their manifestations, lastReactionOccurrence); every stored row and every analyst view
row is compared."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, UpsertStats, Warehouse, open_warehouse
from warehouse.views import VIEW_NAMES

T1, T2 = "2026-03-01T10:00:00.5+05:30", "2026-03-02T00:00:00Z"
DELETED_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
SUBJECT = {"reference": "Patient/007"}


def _observation(rid: str, lu: str, version: str, **fields: Any) -> dict[str, Any]:
    return resource(rid, lu, version, status="final", subject=SUBJECT, **fields)


def _steps() -> list[tuple[str, list[dict[str, Any]]]]:
    tricky = {
        "valueQuantity": {"value": orjson.Fragment(b"0.12345678901234567890123"), "unit": "µg/L"},
        "referenceRange": [
            {
                "low": {"value": orjson.Fragment(b"1.10")},
                "high": {"value": orjson.Fragment(b"123456789012345678901234567890")},
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "0001", "display": "Zürich ✓ 日本 \U0001f600"}]},
        "effectiveDateTime": "2026-03-01T10:00:00-03:00",
        "issued": "2026-03-01T10:00:00.1234567+14:00",
    }
    return [
        (
            "Patient",
            [resource("007", T1, "1", resource_type="Patient", birthDate="1980-04", name=[{"family": "Ñandú"}])],
        ),
        (
            "Observation",
            [_observation("007", T1, "1", **tricky), _observation("1e5", T1, "10", valueInteger=2147483647)],
        ),
        ("Observation", [_observation("1e5", T1, "9", valueInteger=1), _observation("00123", None, "3")]),
        ("Observation", [_observation("00123", None, "2"), _observation("gone", T1, "1")]),
        ("tombstone", [{"id": "gone"}, {"id": "never-seen"}]),
        ("Observation", [_observation("gone", T2, "2", valueString="back"), _observation("never-seen", T1, "1")]),
        # 00123 has no lastUpdated: deleted, then answered again before, at and after the deletion (DELETED_AT)
        ("tombstone", [{"id": "00123"}]),
        ("Observation", [_observation("00123", None, "4", valueString="late")], DELETED_AT - timedelta(hours=1)),
        ("Observation", [_observation("00123", None, "4", valueString="late")], DELETED_AT),
        ("Observation", [_observation("00123", None, "4", valueString="back")], DELETED_AT + timedelta(microseconds=1)),
        # times and reactions in the forms the flat columns read since: period end, Timing, onsetAge, manifestations
        (
            "Observation",
            [
                _observation("end", T1, "1", effectivePeriod={"end": T1}),
                _observation("timing", T1, "1", effectiveTiming={"event": [T1, T2]}),
            ],
        ),
        ("DiagnosticReport", [resource("007", T1, "1", resource_type="DiagnosticReport", effectivePeriod={"end": T2})]),
        ("AllergyIntolerance", [_allergy()]),
    ]


def _allergy() -> dict[str, Any]:
    sct = "http://snomed.info/sct"
    reactions = [
        {
            "manifestation": [
                {"coding": [{"system": sct, "code": "126485001", "display": "Ürtikaria ✓"}]},
                {"text": "x"},
                {"coding": [{"system": "urn:ehr:lokal", "code": "ANA-1"}, {"system": sct, "code": "39579001"}]},
            ],
            "exposureRoute": {"coding": [{"system": sct, "code": "26643006"}]},
        },
        {
            "severity": "severe",
            "onset": T1,
            "substance": {"coding": [{"system": "urn:ehr:stoff", "code": "00123"}], "text": "Erdnuß"},
            "manifestation": [{"coding": []}],
        },
    ]
    return resource(
        "007",
        T1,
        "1",
        resource_type="AllergyIntolerance",
        patient=SUBJECT,
        onsetAge={"value": 0.5},
        lastReactionOccurrence=T1,
        reaction=reactions,
    )


def _run(wh: Warehouse, zone: LandingZone) -> list[object]:
    reports: list[object] = []
    for n, (kind, items, *answered_at) in enumerate(_steps()):
        if kind == "tombstone":
            ids = [i["id"] for i in items]
            reports.append(wh.tombstone("c1", "Observation", ids, DELETED_AT))
        else:
            when = answered_at[0] if answered_at else None
            reports.append(wh.upsert(land(zone, items, run_id=f"r{n}", resource_type=kind, transaction_time=when)))
    wh.refresh_flat_tables()
    return reports


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "[{":
        return json.dumps(json.loads(value), sort_keys=True)  # DuckDB hands a JSON column back as text
    return value


def _answers(wh: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    stored = "SELECT resource_type, id, version_id, last_updated, deleted_at IS NOT NULL AS deleted, content_hash, "
    stored += "CAST(resource AS TEXT) AS doc FROM fhir_resources"
    for name, sql in [("fhir_resources", stored), *((v, f'SELECT * FROM "{v}"') for v in VIEW_NAMES)]:
        rows = [tuple(_plain(v) for v in row.values()) for row in wh.iter_rows(sql)]
        out[name] = sorted(rows, key=repr)
    return out


@pytest.mark.postgres
def test_duckdb_and_postgres_give_the_same_answers(tmp_path: Path, postgres_url: str) -> None:
    results = {}
    for name, target in (("duckdb", str(tmp_path / "wh.duckdb")), ("postgres", postgres_url)):
        with open_warehouse(target) as wh:
            reports = _run(wh, LandingZone(tmp_path / name))
            results[name] = (reports, _answers(wh))
    duck, pg = results["duckdb"], results["postgres"]
    assert duck[0] == pg[0]
    # the late, older versions (steps 2 and 3) changed nothing; the tombstone marked one row and placed one
    assert duck[0][2:5] == [UpsertStats(1, 0, 1), UpsertStats(1, 0, 1), 2]
    # 00123 (no lastUpdated): answered before or at its deletion, it stays deleted; answered after, it is back
    assert duck[0][6:10] == [1, UpsertStats(0, 0, 1), UpsertStats(0, 0, 1), UpsertStats(0, 1, 0)]
    for table, rows in duck[1].items():
        if table == "fhir_resources":  # JSONB re-renders the text: compare the parsed documents
            rows = [(*r[:-1], json.loads(r[-1]) if r[-1] else None) for r in rows]
            other = [(*r[:-1], json.loads(r[-1]) if r[-1] else None) for r in pg[1][table]]
            assert rows == other, table
        else:
            assert rows == pg[1][table], table
    observation = {r[5]: r for r in duck[1]["observation"]}  # columns: provenance (5), then id
    assert set(observation) == {"007", "1e5", "00123", "gone", "end", "timing"}
    reactions = duck[1]["allergy_intolerance_reaction"]  # a row per manifestation, then per coding of one
    assert len(reactions) == 4 and len(duck[1]["allergy_intolerance_reaction_coding"]) == 3
    # provenance (5), id, patient_id, reaction_index ... the columns added last: manifestation_index, the systems
    assert sorted((r[-3:] for r in reactions), key=repr) == [
        (0, "urn:ehr:stoff", None),
        (0, None, "http://snomed.info/sct"),
        (1, None, "http://snomed.info/sct"),
        (2, None, "http://snomed.info/sct"),
    ]
    assert [r[-1] for r in duck[1]["allergy_intolerance"]] == [T1]  # last_reaction_occurrence, as sent
    assert '"back"' in str(next(r for r in duck[1]["fhir_resources"] if r[1] == "00123")[-1])


@pytest.mark.postgres
def test_a_number_past_a_doubles_range_is_a_view_value_on_both_backends_not_an_error(
    tmp_path: Path, postgres_url: str
) -> None:
    """FHIR decimals have no range: ``1e-400`` made PostgreSQL's cast to DOUBLE PRECISION raise, and the whole
    ``observation`` view failed for every row. Both backends now answer as DuckDB does: 0 below a double's least
    magnitude, +-Infinity past its largest (for a value that lands), subnormals kept."""
    values = [b"1e-400", b"-1e400", b"1e400", b"1e-310", b"4.5e-324", b"7.10"]
    items = [_observation(f"r{i}", T1, "1", valueQuantity={"value": orjson.Fragment(v)}) for i, v in enumerate(values)]
    answers = {}
    for name, target in (("duckdb", str(tmp_path / "wh.duckdb")), ("postgres", postgres_url)):
        with open_warehouse(target) as wh:
            wh.upsert(land(LandingZone(tmp_path / name), items))
            wh.refresh_flat_tables()
            rows = wh.iter_rows('SELECT id, value_quantity AS v FROM "observation"')
            answers[name] = {r["id"]: float(r["v"]) for r in rows}
    assert answers["duckdb"] == answers["postgres"]
    # r1 and r2 (+-1e400) never land: the landing checks' JSON parser refuses them and they are quarantined
    assert answers["postgres"] == {"r0": 0.0, "r3": 1e-310, "r4": 5e-324, "r5": 7.1}
