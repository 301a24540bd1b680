"""Analyst views (SQL-on-FHIR ViewDefinitions in warehouse/viewdefs): columns, values, provenance, linking.

Each test runs on DuckDB and PostgreSQL over the same resources (tests/warehouse/analyst_data.py), loaded through
the landing zone and ``Warehouse.upsert``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.warehouse.analyst_data import B_BASE, DOC_SHA, SHARED_MRN, analyst_wh, sandbox_resources
from warehouse import VIEW_NAMES, Warehouse, open_warehouse, views
from warehouse._sql import DUCKDB
from warehouse.view_refresh import refresh_analyst_views
from warehouse.views import (
    LINK_VIEW_NAMES,
    PROVENANCE_COLUMNS,
    VIEWDEF_DIR,
    ViewDefinitionFileError,
    view_definition_names,
)

__all__ = ["analyst_wh"]

# The columns the hand-written views offered before the ViewDefinitions: downstream code may rely on them.
_KEY = ("id", "connection_id", "tenant_id", "version_id", "last_updated")
_CODE = ("code", "code_display")
LEGACY: dict[str, tuple[str, ...]] = {
    "patient": ("family", "given", "gender", "birth_date", "deceased", "mrn", "city", "state", "postal_code"),
    "observation": (
        "patient_id",
        "encounter_id",
        "status",
        "category",
        "code_system",
        *_CODE,
        "value_quantity",
        "unit",
        "value_string",
        "effective",
        "issued",
    ),
    "encounter": ("patient_id", "status", "class_code", "type_code", "type_display", "period_start", "period_end"),
    "condition": (
        "patient_id",
        "encounter_id",
        "clinical_status",
        "verification_status",
        "category",
        *_CODE,
        "onset",
        "abatement",
        "recorded_date",
    ),
    "medication_request": (
        "patient_id",
        "encounter_id",
        "status",
        "intent",
        "medication_code",
        "medication_display",
        "medication_reference",
        "authored_on",
        "dosage_text",
    ),
    "allergy_intolerance": (
        "patient_id",
        "clinical_status",
        "verification_status",
        "category",
        "criticality",
        *_CODE,
        "recorded_date",
    ),
    "immunization": ("patient_id", "status", "vaccine_code", "vaccine_display", "occurrence", "lot_number"),
    "procedure": ("patient_id", "encounter_id", "status", *_CODE, "performed"),
    "diagnostic_report": (
        "patient_id",
        "encounter_id",
        "status",
        "category",
        *_CODE,
        "effective",
        "issued",
        "conclusion",
    ),
    "care_plan": ("patient_id", "status", "intent", "category", "title", "period_start", "period_end"),
    "document_reference": (
        "patient_id",
        "status",
        "doc_status",
        "type_code",
        "type_display",
        "date",
        "description",
        "attachment_content_type",
        "attachment_url",
        "attachment_title",
        "attachment_sha256",
        "attachment_size",
    ),
}
CODING_VIEWS = ("observation", "condition", "medication_request", "procedure", "diagnostic_report", "immunization")


def _rows(wh: Warehouse, sql: str) -> list[dict[str, Any]]:
    return list(wh.iter_rows(sql))


def _columns(wh: Warehouse, view: str) -> list[str]:
    sql = "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position"
    return [r["column_name"] for r in wh.iter_rows(sql, (view,))]


def _viewdef_columns(name: str) -> list[str]:
    view = json.loads((VIEWDEF_DIR / f"{name}.json").read_text())

    def walk(selects: list[dict[str, Any]]) -> list[str]:
        out: list[str] = []
        for s in selects:
            out += [c["name"] for c in s.get("column", [])]
            out += walk(s.get("select", []))
        return out

    return walk(view["select"])


def test_every_view_definition_is_a_view() -> None:
    assert (*view_definition_names(), *LINK_VIEW_NAMES) == VIEW_NAMES
    for name in (*LEGACY, *(f"{v}_coding" for v in CODING_VIEWS), "patient_identifier", "observation_component"):
        assert name in VIEW_NAMES, name
    for name in view_definition_names():
        view = json.loads((VIEWDEF_DIR / f"{name}.json").read_text())
        assert (view["resourceType"], view["name"], view["status"]) == ("ViewDefinition", name, "active")


def test_views_exist_and_are_recreatable(wh: Warehouse) -> None:
    assert wh.refresh_flat_tables() == list(VIEW_NAMES)
    wh.refresh_flat_tables()
    for name in VIEW_NAMES:
        assert _rows(wh, f'SELECT count(*) AS n FROM "{name}"') == [{"n": 0}]


def test_view_columns(analyst_wh: Warehouse) -> None:
    for name in view_definition_names():
        cols = _columns(analyst_wh, name)
        extra = ["attachment_sha256", "attachment_size"] if name == "document_reference" else []
        assert sorted(cols) == sorted([*_viewdef_columns(name), *PROVENANCE_COLUMNS, *extra]), name
        assert len(cols) == len(set(cols)), name
    for name, legacy in LEGACY.items():
        assert set(_KEY) | set(legacy) <= set(_columns(analyst_wh, name)), name
    assert _columns(analyst_wh, "patient_link") == [
        "tenant_id",
        "connection_id",
        "patient_id",
        "linked_connection_id",
        "linked_patient_id",
        "identifier_system",
        "identifier_value",
    ]
    assert _columns(analyst_wh, "patient_person") == ["tenant_id", "connection_id", "patient_id", "person_key"]


def test_every_live_sandbox_resource_has_a_row(analyst_wh: Warehouse) -> None:
    expected = {t: len(rs) for t, rs in sandbox_resources().items()}
    views = {
        "Patient": "patient",
        "Observation": "observation",
        "Encounter": "encounter",
        "Condition": "condition",
        "MedicationRequest": "medication_request",
        "AllergyIntolerance": "allergy_intolerance",
        "Immunization": "immunization",
        "Procedure": "procedure",
        "DiagnosticReport": "diagnostic_report",
        "CarePlan": "care_plan",
        "DocumentReference": "document_reference",
    }
    assert set(expected) == set(views)
    for rtype, view in views.items():
        got = _rows(analyst_wh, f"SELECT count(*) AS n FROM {view} WHERE connection_id = 'conn-a'")
        assert got == [{"n": expected[rtype]}], view


def test_patient_values_and_provenance(analyst_wh: Warehouse) -> None:
    rows = _rows(
        analyst_wh,
        "SELECT id, connection_id, tenant_id, source, version_id, family, given, gender, birth_date, deceased, mrn "
        "FROM patient WHERE connection_id = 'conn-b' ORDER BY id",
    )
    assert rows == [
        {
            "id": "b-pat1",
            "connection_id": "conn-b",
            "tenant_id": "tenant-1",
            "source": f"{B_BASE}/Patient?_count=100",
            "version_id": "1",
            "family": "Mensah",
            "given": "Mateo",
            "gender": "male",
            "birth_date": "1946-11",
            "deceased": False,
            "mrn": SHARED_MRN,
        },
        {
            "id": "b-pat2",
            "connection_id": "conn-b",
            "tenant_id": "tenant-1",
            "source": f"{B_BASE}/Patient?_count=100",
            "version_id": "1",
            "family": None,
            "given": None,
            "gender": None,
            "birth_date": None,
            "deceased": None,
            "mrn": None,
        },
    ]
    identifiers = _rows(analyst_wh, "SELECT system, value FROM patient_identifier WHERE id = 'b-pat1' ORDER BY value")
    assert identifiers == [
        {"system": "urn:ehr-b:mrn", "value": "B-0001"},
        {"system": "urn:oid:2.16.840.1.113883.19.5", "value": SHARED_MRN},
    ]


def test_observation_values(analyst_wh: Warehouse) -> None:
    rows = _rows(
        analyst_wh,
        "SELECT id, patient_id, status, category, code_system, code, code_display, value_quantity, unit, "
        "value_string, effective, reference_range_low, reference_range_high, interpretation "
        "FROM observation WHERE connection_id = 'conn-b' ORDER BY id",
    )
    # b-gone is tombstoned; b-obs1 has an absolute subject reference and a partial effective date
    assert rows == [
        {
            "id": "b-obs1",
            "patient_id": "b-pat1",
            "status": "final",
            "category": "laboratory",
            "code_system": "http://loinc.org",
            "code": "2160-0",
            "code_display": "Creatinine [Mass/volume] in Serum or Plasma",
            "value_quantity": 1.9,
            "unit": "mg/dL",
            "value_string": None,
            "effective": "2025-03",
            "reference_range_low": 0.6,
            "reference_range_high": 1.2,
            "interpretation": "H",
        },
        {
            "id": "b-obs2",
            "patient_id": "b-pat1",
            "status": "final",
            "category": "laboratory",
            "code_system": "http://loinc.org",
            "code": "2160-0",
            "code_display": "Creatinine [Mass/volume] in Serum or Plasma",
            "value_quantity": 1.1,
            "unit": "mg/dL",
            "value_string": None,
            "effective": "2024-12-01T08:00:00Z",
            "reference_range_low": 0.6,
            "reference_range_high": 1.2,
            "interpretation": None,
        },
        {
            "id": "b-obs3",
            "patient_id": "b-pat2",
            "status": "preliminary",
            "category": None,
            "code_system": None,
            "code": None,
            "code_display": "Nurse note",
            "value_quantity": None,
            "unit": None,
            "value_string": "comfortable",
            "effective": "2025-02-10",
            "reference_range_low": None,
            "reference_range_high": None,
            "interpretation": None,
        },
    ]
    smoking = _rows(analyst_wh, "SELECT value_string, value_code FROM observation WHERE code = '72166-2' ORDER BY id")
    assert smoking and all(r["value_string"] and r["value_code"] for r in smoking)
    bp = _rows(analyst_wh, "SELECT count(*) AS n FROM observation_component WHERE id = 'obs0-7'")
    assert bp == [{"n": 2}]


def test_coding_views_list_every_coding(analyst_wh: Warehouse) -> None:
    for view in CODING_VIEWS:
        rows = _rows(
            analyst_wh, f"SELECT id, patient_id, system, code FROM {view}_coding WHERE connection_id = 'conn-b'"
        )
        counts = Counter(r["id"] for r in rows)
        assert counts and all(n == 2 for n in counts.values()), (view, counts)
        assert {r["patient_id"] for r in rows} == {"b-pat1"}, view
    sandbox = _rows(analyst_wh, "SELECT count(*) AS n FROM observation_coding WHERE connection_id = 'conn-a'")
    assert sandbox[0]["n"] > 0


def test_other_views_values(analyst_wh: Warehouse) -> None:
    b = "WHERE connection_id = 'conn-b' ORDER BY id"
    assert _rows(analyst_wh, f"SELECT id, patient_id, clinical_status, code, onset, abatement FROM condition {b}") == [
        {
            "id": "b-cond1",
            "patient_id": "b-pat1",
            "clinical_status": "active",
            "code": "44054006",
            "onset": "2019",
            "abatement": None,
        },
        {
            "id": "b-cond2",
            "patient_id": "b-pat1",
            "clinical_status": "resolved",
            "code": None,
            "onset": "last summer",
            "abatement": "2024-09-01",
        },
    ]
    assert _rows(
        analyst_wh, f"SELECT id, medication_code, medication_display, dosage_text FROM medication_request {b}"
    ) == [
        {
            "id": "b-med1",
            "medication_code": "860975",
            "medication_display": "metformin 500 MG",
            "dosage_text": "500 mg twice daily",
        },
        {"id": "b-med2", "medication_code": None, "medication_display": "aspirin", "dosage_text": None},
    ]
    singles = {
        "encounter": ("class_code, period_start", {"class_code": "AMB", "period_start": "2025-03"}),
        "procedure": ("performed", {"performed": "2025-03-02"}),
        "diagnostic_report": ("effective, conclusion", {"effective": "2025-03", "conclusion": "Creatinine high"}),
        "immunization": ("vaccine_code, occurrence", {"vaccine_code": "03", "occurrence": "childhood"}),
        "allergy_intolerance": ("category, code", {"category": "food", "code": "91935009"}),
        "care_plan": ("status, intent, title", {"status": "active", "intent": "plan", "title": None}),
    }
    for view, (cols, expected) in singles.items():
        assert _rows(analyst_wh, f"SELECT {cols} FROM {view} {b}") == [expected], view


def test_document_reference_joins_the_stored_attachment(analyst_wh: Warehouse) -> None:
    rows = _rows(
        analyst_wh,
        "SELECT id, patient_id, type_code, attachment_url, attachment_content_type, attachment_sha256, "
        "attachment_size FROM document_reference WHERE connection_id = 'conn-b' ORDER BY id",
    )
    assert rows == [
        {
            "id": "b-doc1",
            "patient_id": "b-pat1",
            "type_code": "18842-5",
            "attachment_url": f"{B_BASE}/Binary/b-bin1",
            "attachment_content_type": "application/pdf",
            "attachment_sha256": DOC_SHA,
            "attachment_size": 42,
        },
        {
            "id": "b-doc2",
            "patient_id": "b-pat1",
            "type_code": None,
            "attachment_url": None,
            "attachment_content_type": None,
            "attachment_sha256": None,
            "attachment_size": None,
        },
    ]


def test_patients_link_across_connections_of_one_tenant(analyst_wh: Warehouse) -> None:
    links = _rows(
        analyst_wh,
        "SELECT connection_id, patient_id, linked_connection_id, linked_patient_id FROM patient_link "
        "ORDER BY connection_id, patient_id",
    )
    # conn-c's c-pat1 has the same MRN in another tenant: never linked
    assert links == [
        {
            "connection_id": "conn-a",
            "patient_id": "pat0",
            "linked_connection_id": "conn-b",
            "linked_patient_id": "b-pat1",
        },
        {
            "connection_id": "conn-b",
            "patient_id": "b-pat1",
            "linked_connection_id": "conn-a",
            "linked_patient_id": "pat0",
        },
    ]
    persons = _rows(analyst_wh, "SELECT connection_id, patient_id, person_key FROM patient_person ORDER BY 1, 2")
    keys = {(r["connection_id"], r["patient_id"]): r["person_key"] for r in persons}
    assert keys[("conn-b", "b-pat1")] == keys[("conn-a", "pat0")] == "conn-a/pat0"
    assert keys[("conn-c", "c-pat1")] == "conn-c/c-pat1"
    assert len(persons) == len(_rows(analyst_wh, "SELECT id FROM patient"))


def test_analysts_doc_lists_every_view_and_column() -> None:
    doc = (VIEWDEF_DIR.parents[1] / "docs" / "ANALYSTS.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`"): line for line in doc.splitlines() if line.startswith("| `")}
    for name in VIEW_NAMES:
        assert name in rows, f"docs/ANALYSTS.md does not list {name}"
    for name in view_definition_names():
        for col in _viewdef_columns(name):
            assert col == "id" or f"`{col}`" in rows[name].split("|")[3], (name, col)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"resourceType": "ViewDefinition", "name": "other", "resource": "Patient", "status": "active", '
         '"select": [{"column": [{"name": "id", "path": "id"}]}]}', "name is 'other', not 'broken'"),
        ('{"resourceType": "ViewDefinition", "name": "broken", "resource": "Patient", "status": "active", '
         '"select": [{"column": [{"name": "x", "path": "name.nosuch()"}]}]}', "nosuch"),
    ],
)  # fmt: skip
def test_a_bad_view_definition_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    (tmp_path / "broken.json").write_text(text)
    monkeypatch.setattr(views, "VIEWDEF_DIR", tmp_path)
    with pytest.raises(ViewDefinitionFileError, match=r"broken\.json") as err:
        views.view_statements(DUCKDB)
    assert problem in str(err.value)


def test_duckdb_replaces_only_views_whose_definition_changed(tmp_path: Path) -> None:
    """As on PostgreSQL (test_analyst_views_pg.py): a refresh leaves unchanged views alone (rebinding all 22 cost
    ~0.3 s of CPU); one whose stored definition differs, or that someone replaced by hand, is
    replaced, columns and all."""
    with open_warehouse(str(tmp_path / "wh.duckdb")) as wh:
        assert refresh_analyst_views(wh) == list(VIEW_NAMES)
        assert refresh_analyst_views(wh) == []
        with wh._write("test") as cur:
            cur.execute("COMMENT ON VIEW observation IS 'an older definition'")
            cur.execute('CREATE OR REPLACE VIEW "condition" AS SELECT 1 AS something_else')
        assert refresh_analyst_views(wh) == ["condition", "observation"]
        assert refresh_analyst_views(wh) == []
        assert _rows(wh, "SELECT count(*) AS n FROM condition WHERE patient_id IS NULL") == [{"n": 0}]
        assert _rows(wh, "SELECT count(*) AS n FROM observation") == [{"n": 0}]
