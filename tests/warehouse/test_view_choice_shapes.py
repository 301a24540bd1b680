"""Analyst view columns for FHIR R4 shapes real servers send that the sandbox's synthetic data does not: a value,
onset or time that the flat view showed as NULL although the resource carries it.

- Observation: ``valueQuantity.comparator`` was dropped (a result ``<0.01`` read as exactly ``0.01``), and a
  ``valueRange``, ``valueDateTime``, ``valuePeriod``, ``valueRatio``, ``valueTime`` or ``valueSampledData`` left
  every value column NULL, as if there were no value. Now ``value_comparator``, ``value_type``,
  ``value_range_low``/``_high`` and ``value_date_time`` show them.
- Condition: ``onsetAge``/``onsetRange`` (and a period without start) left ``onset`` NULL with no trace, and
  ``abatementBoolean``/``abatementAge`` left ``abatement`` NULL. Now ``onset_type``, ``onset_age``,
  ``onset_age_unit`` and ``abatement_type`` show them.
- Procedure: ``performedPeriod`` without start, ``performedAge``, ``performedRange``: now ``performed_end`` and
  ``performed_type``.
- MedicationRequest whose ``medicationReference`` points at a ``contained`` Medication (``#m1``): the drug's code
  was nowhere in the views. Now ``medication_code``/``medication_display`` and ``medication_request_coding`` show
  the contained Medication's code.
- Observation components: only ``valueQuantity`` was read; a component answered in ``valueCodeableConcept``,
  ``valueString``, ``valueInteger`` or ``valueBoolean`` (questionnaire-style panels) showed no value. Now the
  same value columns as ``observation`` (without the Range/dateTime ones) show them.
- MedicationRequest referencing a Medication resource (``Medication/123``, usual at Epic): the synced Medication
  had no view and the request no id to join on, so the drug's code was not in the flat tables. Now
  ``medication_request.medication_id`` joins ``medication`` and ``medication_coding``.
- Observation and DiagnosticReport ``effectivePeriod`` with only its end (``effective`` NULL, the time nowhere),
  Observation ``effectiveTiming``: now ``effective_end`` and ``effective_type``.
- AllergyIntolerance ``onset[x]`` and ``reaction`` (manifestations, severity) were in no view: now
  ``allergy_intolerance.onset``/``onset_type``/``onset_age``/``onset_age_unit`` and the child view
  ``allergy_intolerance_reaction`` (one row per manifestation of each reaction).
- AllergyIntolerance reactions: only a manifestation's first coding was shown, so a reaction coded first in a local
  system was missed by a SNOMED CT filter; ``substance_code`` and ``exposure_route`` had no system (a code is
  ambiguous across systems), and ``lastReactionOccurrence`` was in no view. Now ``allergy_intolerance_reaction_coding``
  (every coding of every manifestation, joined by ``reaction_index`` and ``manifestation_index``),
  ``substance_system``, ``exposure_route_system`` and ``allergy_intolerance.last_reaction_occurrence``.
"""

from __future__ import annotations

from typing import Any

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse

SUBJECT = {"reference": "Patient/p1"}
CODE = {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]}


def _rows(wh: Warehouse, view: str, columns: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in wh.iter_rows(f"SELECT id, {columns} FROM {view}")}


def _obs(rid: str, **value: Any) -> dict[str, Any]:
    return resource(rid, status="final", subject=SUBJECT, code=CODE, **value)


def test_an_observation_value_in_any_form_is_visible(wh: Warehouse, zone: LandingZone) -> None:
    observations = [
        _obs("lt", valueQuantity={"value": 0.01, "comparator": "<", "unit": "mg/dL"}),
        _obs("range", valueRange={"low": {"value": 1}, "high": {"value": 5}}),
        _obs("when", valueDateTime="2020-05"),
        _obs("period", valuePeriod={"start": "2020", "end": "2021"}),
        _obs("ratio", valueRatio={"numerator": {"value": 1}, "denominator": {"value": 128}}),
        _obs("time", valueTime="10:30:00"),
        _obs("none"),
    ]
    wh.upsert(land(zone, observations))
    wh.refresh_flat_tables()
    cols = "value_type, value_quantity, value_comparator, value_range_low, value_range_high, value_date_time"
    got = {k: tuple(v.values())[1:] for k, v in _rows(wh, "observation", cols).items()}
    assert got == {
        "lt": ("Quantity", 0.01, "<", None, None, None),
        "range": ("Range", None, None, 1.0, 5.0, None),
        "when": ("dateTime", None, None, None, None, "2020-05"),
        "period": ("Period", None, None, None, None, "2020"),
        "ratio": ("Ratio", None, None, None, None, None),
        "time": ("time", None, None, None, None, None),
        "none": (None, None, None, None, None, None),
    }


def test_a_condition_onset_or_abatement_in_any_form_is_visible(wh: Warehouse, zone: LandingZone) -> None:
    conditions = [
        resource("age", resource_type="Condition", onsetAge={"value": 45, "unit": "yr", "code": "a"}),
        resource("range", resource_type="Condition", onsetRange={"low": {"value": 40}}, abatementBoolean=True),
        resource("end-only", resource_type="Condition", onsetPeriod={"end": "2020-03"}),
        resource("date", resource_type="Condition", onsetDateTime="2019", abatementDateTime="2020-01"),
    ]
    wh.upsert(land(zone, conditions, resource_type="Condition"))
    wh.refresh_flat_tables()
    cols = "onset, onset_type, onset_age, onset_age_unit, abatement, abatement_type"
    got = {k: tuple(v.values())[1:] for k, v in _rows(wh, "condition", cols).items()}
    assert got == {
        "age": (None, "Age", 45.0, "a", None, None),
        "range": (None, "Range", None, None, None, "boolean"),
        "end-only": (None, "Period", None, None, None, None),
        "date": ("2019", "dateTime", None, None, "2020-01", "dateTime"),
    }


def test_a_procedure_time_in_any_form_is_visible(wh: Warehouse, zone: LandingZone) -> None:
    procedures = [
        resource("end-only", resource_type="Procedure", performedPeriod={"end": "2020"}),
        resource("both", resource_type="Procedure", performedPeriod={"start": "2020-01", "end": "2020-02"}),
        resource("age", resource_type="Procedure", performedAge={"value": 4}),
    ]
    wh.upsert(land(zone, procedures, resource_type="Procedure"))
    wh.refresh_flat_tables()
    got = {
        k: tuple(v.values())[1:] for k, v in _rows(wh, "procedure", "performed, performed_end, performed_type").items()
    }
    assert got == {
        "end-only": (None, "2020", "Period"),
        "both": ("2020-01", "2020-02", "Period"),
        "age": (None, None, "Age"),
    }


def test_a_contained_medication_gives_the_medication_code(wh: Warehouse, zone: LandingZone) -> None:
    aspirin = {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1191", "display": "Aspirin"}]
    }
    other = {"resourceType": "Medication", "id": "m2", "code": {"text": "other"}}
    requests = [
        resource(
            "contained",
            resource_type="MedicationRequest",
            contained=[{"resourceType": "Medication", "id": "m1", "code": aspirin}],
            medicationReference={"reference": "#m1"},
        ),
        resource("external", resource_type="MedicationRequest", medicationReference={"reference": "Medication/9"}),
        resource(  # two contained Medications: which one is meant is not guessed
            "two",
            resource_type="MedicationRequest",
            contained=[{"resourceType": "Medication", "id": "m1", "code": aspirin}, other],
            medicationReference={"reference": "#m2"},
        ),
        resource(  # the one contained Medication is not what the reference names: its code is not the drug
            "elsewhere",
            resource_type="MedicationRequest",
            contained=[
                {"resourceType": "Medication", "id": "m1", "code": aspirin},
                {"resourceType": "Organization", "id": "m2"},
            ],
            medicationReference={"reference": "#m2", "display": "Given"},
        ),
        resource(
            "dangling",
            resource_type="MedicationRequest",
            contained=[{"resourceType": "Medication", "id": "m1", "code": aspirin}],
            medicationReference={"reference": "#m9"},
        ),
    ]
    wh.upsert(land(zone, requests, resource_type="MedicationRequest"))
    wh.refresh_flat_tables()
    got = {
        k: tuple(v.values())[1:]
        for k, v in _rows(wh, "medication_request", "medication_code, medication_display").items()
    }
    assert got == {
        "contained": ("1191", "Aspirin"),
        "external": (None, None),
        "two": (None, None),
        "elsewhere": (None, "Given"),
        "dangling": (None, None),
    }
    codings = [tuple(r.values()) for r in wh.iter_rows("SELECT id, code FROM medication_request_coding")]
    assert codings == [("contained", "1191")]


def test_an_observation_component_value_in_any_form_is_visible(wh: Warehouse, zone: LandingZone) -> None:
    def comp(**value: Any) -> dict[str, Any]:
        return {"code": CODE, **value}

    components = [
        comp(valueQuantity={"value": 5, "comparator": ">", "unit": "mg"}),
        comp(
            valueCodeableConcept={
                "coding": [{"system": "http://loinc.org", "code": "LA6568-5", "display": "Not at all"}]
            }
        ),
        comp(valueString="mild"),
        comp(valueInteger=3),
        comp(valueBoolean=False),
        comp(valueRatio={"numerator": {"value": 1}}),
    ]
    wh.upsert(land(zone, [_obs("panel", component=components)]))
    wh.refresh_flat_tables()
    cols = "value_type, value_quantity, value_comparator, value_string, value_code, value_integer, value_boolean"
    got = sorted(tuple(r.values()) for r in wh.iter_rows(f"SELECT {cols} FROM observation_component"))
    assert got == [
        ("CodeableConcept", None, None, "Not at all", "LA6568-5", None, None),
        ("Quantity", 5.0, ">", None, None, None, None),
        ("Ratio", None, None, None, None, None, None),
        ("boolean", None, None, None, None, None, False),
        ("integer", None, None, None, None, 3, None),
        ("string", None, None, "mild", None, None, None),
    ]


def test_a_referenced_medication_s_code_is_reachable_from_the_request(wh: Warehouse, zone: LandingZone) -> None:
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    med = resource(
        "m9",
        resource_type="Medication",
        code={"coding": [{"system": "urn:oid:1.2.3", "code": "local-7"}, {"system": rxnorm, "code": "1191"}]},
    )
    request = resource(
        "r1",
        resource_type="MedicationRequest",
        medicationReference={"reference": "https://ehr.example/fhir/Medication/m9", "display": "aspirin 81 mg"},
    )
    wh.upsert(land(zone, [med], resource_type="Medication"))
    wh.upsert(land(zone, [request], resource_type="MedicationRequest", run_id="r2"))
    wh.refresh_flat_tables()
    sql = (
        "SELECT r.id, r.medication_id, m.code AS first_code, c.code AS rxnorm FROM medication_request r"
        " JOIN medication m ON m.connection_id = r.connection_id AND m.id = r.medication_id"
        " JOIN medication_coding c ON c.connection_id = m.connection_id AND c.id = m.id"
        f" WHERE c.system = '{rxnorm}'"
    )
    assert [tuple(r.values()) for r in wh.iter_rows(sql)] == [("r1", "m9", "local-7", "1191")]


def test_an_observation_or_report_time_in_any_form_is_visible(wh: Warehouse, zone: LandingZone) -> None:
    observations = [
        _obs("end-only", effectivePeriod={"end": "2020-03-01"}),
        _obs("both", effectivePeriod={"start": "2020-01", "end": "2020-02"}),
        _obs("timing", effectiveTiming={"event": ["2021-05-01T08:00:00Z", "2021-05-02T08:00:00Z"]}),
        _obs("instant", effectiveInstant="2022-01-01T10:00:00.123Z"),
        _obs("date", effectiveDateTime="2019"),
        _obs("none"),
    ]
    reports = [
        resource("end-only", resource_type="DiagnosticReport", effectivePeriod={"end": "2020-03"}),
        resource("date", resource_type="DiagnosticReport", effectiveDateTime="2019-05"),
    ]
    wh.upsert(land(zone, observations))
    wh.upsert(land(zone, reports, resource_type="DiagnosticReport", run_id="r2"))
    wh.refresh_flat_tables()
    got = {
        k: tuple(v.values())[1:]
        for k, v in _rows(wh, "observation", "effective, effective_end, effective_type").items()
    }
    assert got == {
        "end-only": (None, "2020-03-01", "Period"),
        "both": ("2020-01", "2020-02", "Period"),
        "timing": (None, None, "Timing"),
        "instant": ("2022-01-01T10:00:00.123Z", None, "instant"),
        "date": ("2019", None, "dateTime"),
        "none": (None, None, None),
    }
    got = {
        k: tuple(v.values())[1:]
        for k, v in _rows(wh, "diagnostic_report", "effective, effective_end, effective_type").items()
    }
    assert got == {"end-only": (None, "2020-03", "Period"), "date": ("2019-05", None, "dateTime")}


def _allergy(rid: str, **fields: Any) -> dict[str, Any]:
    return resource(rid, resource_type="AllergyIntolerance", patient=SUBJECT, **fields)


def test_an_allergy_onset_in_any_form_is_visible(wh: Warehouse, zone: LandingZone) -> None:
    allergies = [
        _allergy("date", onsetDateTime="2010-06"),
        _allergy("age", onsetAge={"value": 3, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}),
        _allergy("end-only", onsetPeriod={"end": "2012"}),
        _allergy("range", onsetRange={"low": {"value": 2}, "high": {"value": 4}}),
        _allergy("text", onsetString="childhood"),
        _allergy("none"),
    ]
    wh.upsert(land(zone, allergies, resource_type="AllergyIntolerance"))
    wh.refresh_flat_tables()
    cols = "onset, onset_type, onset_age, onset_age_unit"
    got = {k: tuple(v.values())[1:] for k, v in _rows(wh, "allergy_intolerance", cols).items()}
    assert got == {
        "date": ("2010-06", "dateTime", None, None),
        "age": (None, "Age", 3.0, "a"),
        "end-only": (None, "Period", None, None),
        "range": (None, "Range", None, None),
        "text": ("childhood", "string", None, None),
        "none": (None, None, None, None),
    }


def test_every_allergy_reaction_and_manifestation_is_a_row(wh: Warehouse, zone: LandingZone) -> None:
    snomed, route = "http://snomed.info/sct", "http://terminology.hl7.org/CodeSystem/route"
    hives = {"coding": [{"system": snomed, "code": "126485001", "display": "Urticaria"}]}
    wheeze = {"coding": [{"system": snomed, "code": "56018004"}], "text": "Wheezing"}
    reactions = [
        {"manifestation": [hives, wheeze], "severity": "moderate", "onset": "2015-04-01", "description": "after lunch"},
        {
            "manifestation": [{"text": "Anaphylaxis"}],
            "severity": "severe",
            "substance": {"coding": [{"system": snomed, "code": "256349002", "display": "Peanut"}]},
            "exposureRoute": {"coding": [{"system": route, "code": "PO"}, {"system": snomed, "code": "26643006"}]},
        },
        {"severity": "mild"},  # manifestation is 1..* in R4; a server that omits it still shows the reaction
    ]
    wh.upsert(land(zone, [_allergy("a1", reaction=reactions), _allergy("a2")], resource_type="AllergyIntolerance"))
    wh.refresh_flat_tables()
    cols = (
        "id, patient_id, reaction_index, severity, onset, substance_code, substance_display, exposure_route,"
        " description, manifestation_system, manifestation_code, manifestation_display, manifestation_index,"
        " substance_system, exposure_route_system"
    )
    got = sorted(tuple(r.values()) for r in wh.iter_rows(f"SELECT {cols} FROM allergy_intolerance_reaction"))
    hives_row = ("a1", "p1", 0, "moderate", "2015-04-01", None, None, None, "after lunch", snomed, "126485001")
    wheeze_row = ("a1", "p1", 0, "moderate", "2015-04-01", None, None, None, "after lunch", snomed, "56018004")
    assert got == [
        (*hives_row, "Urticaria", 0, None, None),
        (*wheeze_row, "Wheezing", 1, None, None),
        ("a1", "p1", 1, "severe", None, "256349002", "Peanut", "PO", None, None, None, "Anaphylaxis", 0, snomed, route),
        ("a1", "p1", 2, "mild", None, None, None, None, None, None, None, None, 0, None, None),
    ]


def test_every_coding_of_a_manifestation_is_a_row(wh: Warehouse, zone: LandingZone) -> None:
    """A manifestation coded first in the EHR's own system and then in SNOMED CT: the reaction view shows the local
    code, the coding view every coding, so a SNOMED CT filter finds the reaction; and the allergy's
    ``lastReactionOccurrence`` is a column."""
    snomed, local = "http://snomed.info/sct", "urn:ehr:reaction"
    anaphylaxis = {
        "coding": [
            {"system": local, "code": "ANA", "display": "Anaphylactic reaction"},
            {"system": snomed, "code": "39579001", "display": "Anaphylaxis"},
        ]
    }
    hives = {"coding": [{"system": snomed, "code": "126485001"}]}
    reactions = [
        {"manifestation": [{"text": "flushing"}]},
        {"manifestation": [hives, anaphylaxis]},
        {"severity": "mild"},
    ]
    allergy = _allergy("a1", reaction=reactions, lastReactionOccurrence="2024-08-14T09:30:00+02:00")
    wh.upsert(land(zone, [allergy, _allergy("a2")], resource_type="AllergyIntolerance"))
    wh.refresh_flat_tables()
    cols = "id, patient_id, reaction_index, manifestation_index, system, code, display"
    got = sorted(tuple(r.values()) for r in wh.iter_rows(f"SELECT {cols} FROM allergy_intolerance_reaction_coding"))
    assert got == [
        ("a1", "p1", 1, 0, snomed, "126485001", None),
        ("a1", "p1", 1, 1, snomed, "39579001", "Anaphylaxis"),
        ("a1", "p1", 1, 1, local, "ANA", "Anaphylactic reaction"),
    ]
    found = wh.iter_rows(
        "SELECT r.id, r.reaction_index, r.manifestation_code FROM allergy_intolerance_reaction r "
        "JOIN allergy_intolerance_reaction_coding c ON c.connection_id = r.connection_id AND c.id = r.id "
        "AND c.reaction_index = r.reaction_index AND c.manifestation_index = r.manifestation_index "
        f"WHERE c.system = '{snomed}' AND c.code = '39579001'"
    )
    assert [tuple(r.values()) for r in found] == [("a1", 1, "ANA")]
    last = _rows(wh, "allergy_intolerance", "last_reaction_occurrence")
    assert {k: v["last_reaction_occurrence"] for k, v in last.items()} == {
        "a1": "2024-08-14T09:30:00+02:00",
        "a2": None,
    }
