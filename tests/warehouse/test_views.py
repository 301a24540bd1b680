"""Analyst views: values extracted from FHIR JSON, tolerant of missing/polymorphic fields, tombstones excluded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.warehouse.conftest import land, resource
from warehouse import VIEW_NAMES, AttachmentRef, LandingZone, Warehouse


def _select(wh: Warehouse, sql: str) -> list[dict[str, Any]]:
    return list(wh.iter_rows(sql))


def test_views_exist_and_are_recreatable(wh: Warehouse) -> None:
    assert wh.refresh_flat_tables() == list(VIEW_NAMES)
    wh.refresh_flat_tables()
    for name in VIEW_NAMES:
        assert _select(wh, f'SELECT count(*) AS n FROM "{name}"') == [{"n": 0}]


def test_patient_view_values(wh: Warehouse, zone: LandingZone) -> None:
    full = resource(
        "p1",
        resource_type="Patient",
        name=[{"family": "Rivera", "given": ["Ana", "Maria"]}],
        gender="female",
        birthDate="1980-04",
        identifier=[{"system": "urn:mrn", "value": "MRN1"}],
        address=[{"city": "Springfield", "state": "IL", "postalCode": "62701"}],
        deceasedBoolean=False,
    )
    bare = resource("p2", resource_type="Patient")
    wh.upsert(land(zone, [full, bare], resource_type="Patient"))
    wh.refresh_flat_tables()
    rows = _select(wh, "SELECT id, family, given, gender, birth_date, mrn, city, deceased FROM patient ORDER BY id")
    assert rows == [
        {"id": "p1", "family": "Rivera", "given": "Ana", "gender": "female", "birth_date": "1980-04",
         "mrn": "MRN1", "city": "Springfield", "deceased": "false"},
        {"id": "p2", "family": None, "given": None, "gender": None, "birth_date": None, "mrn": None,
         "city": None, "deceased": None},
    ]  # fmt: skip


def test_observation_view_handles_polymorphic_values(wh: Warehouse, zone: LandingZone) -> None:
    coding = {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]}
    obs = [
        resource(
            "q",
            status="final",
            category=[{"coding": [{"code": "vital-signs"}]}],
            code=coding,
            subject={"reference": "Patient/p1"},
            effectiveDateTime="2026-01-01T10:00:00Z",
            valueQuantity={"value": 72, "unit": "/min"},
        ),
        resource(
            "s",
            code={"text": "Smoking status"},
            subject={"reference": "https://ehr.example/fhir/Patient/p2/_history/3"},
            effectivePeriod={"start": "2025-12-01"},
            valueCodeableConcept={"coding": [{"code": "266919005", "display": "Never smoked"}]},
        ),
        resource("w", valueQuantity={"value": "not-a-number"}, subject={"reference": "Group/g1"}),
        resource("gone", valueQuantity={"value": 1}),
    ]
    wh.upsert(land(zone, obs))
    wh.tombstone("c1", "Observation", ["gone"], datetime(2026, 6, 1, tzinfo=UTC))
    wh.refresh_flat_tables()
    rows = _select(
        wh,
        "SELECT id, patient_id, status, category, code, code_display, value_quantity, unit, value_string, effective "
        "FROM observation ORDER BY id",
    )
    assert rows == [
        {"id": "q", "patient_id": "p1", "status": "final", "category": "vital-signs", "code": "8867-4",
         "code_display": "Heart rate", "value_quantity": 72.0, "unit": "/min", "value_string": None,
         "effective": "2026-01-01T10:00:00Z"},
        {"id": "s", "patient_id": "p2", "status": None, "category": None, "code": None,
         "code_display": "Smoking status", "value_quantity": None, "unit": None, "value_string": "Never smoked",
         "effective": "2025-12-01"},
        {"id": "w", "patient_id": None, "status": None, "category": None, "code": None, "code_display": None,
         "value_quantity": None, "unit": None, "value_string": None, "effective": None},
    ]  # fmt: skip


def test_document_reference_view_joins_stored_attachment(wh: Warehouse, zone: LandingZone, tmp_path) -> None:
    doc = resource(
        "d1",
        resource_type="DocumentReference",
        status="current",
        subject={"reference": "Patient/p1"},
        type={"coding": [{"code": "18842-5", "display": "Discharge summary"}]},
        content=[{"attachment": {"contentType": "application/pdf", "url": "Binary/b1"}}],
    )
    wh.upsert(land(zone, [doc, resource("d2", resource_type="DocumentReference")], resource_type="DocumentReference"))
    sha = "ab" * 32
    wh.record_attachment("c1", "Binary/b1", AttachmentRef(sha, 42, "application/pdf", tmp_path / sha))
    wh.refresh_flat_tables()
    rows = _select(
        wh,
        "SELECT id, patient_id, type_code, attachment_url, attachment_content_type, attachment_sha256, "
        "attachment_size FROM document_reference ORDER BY id",
    )
    assert rows == [
        {"id": "d1", "patient_id": "p1", "type_code": "18842-5", "attachment_url": "Binary/b1",
         "attachment_content_type": "application/pdf", "attachment_sha256": sha, "attachment_size": 42},
        {"id": "d2", "patient_id": None, "type_code": None, "attachment_url": None,
         "attachment_content_type": None, "attachment_sha256": None, "attachment_size": None},
    ]  # fmt: skip


def test_other_views_pick_up_their_type(wh: Warehouse, zone: LandingZone) -> None:
    encounter = resource("e1", resource_type="Encounter", subject={"reference": "Patient/p1"})
    encounter.update({"period": {"start": "2026-01-01"}, "class": {"code": "AMB"}})
    wh.upsert(land(zone, [encounter], resource_type="Encounter"))
    wh.upsert(
        land(
            zone,
            [resource("m1", resource_type="MedicationRequest", status="active", intent="order",
                      subject={"reference": "Patient/p1"},
                      medicationCodeableConcept={"coding": [{"code": "197361", "display": "Amlodipine"}]})],
            resource_type="MedicationRequest",
        )
    )  # fmt: skip
    wh.refresh_flat_tables()
    assert _select(wh, "SELECT id, patient_id, class_code, period_start FROM encounter") == [
        {"id": "e1", "patient_id": "p1", "class_code": "AMB", "period_start": "2026-01-01"}
    ]
    assert _select(wh, "SELECT id, medication_code, medication_display, intent FROM medication_request") == [
        {"id": "m1", "medication_code": "197361", "medication_display": "Amlodipine", "intent": "order"}
    ]
