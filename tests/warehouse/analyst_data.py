"""A deterministic warehouse for the analyst views and docs/ANALYSTS.md, loaded through the real write path.

Connection ``conn-a`` (tenant ``tenant-1``) holds four sandbox patients (the sandbox's own generator, seed 7).
Connection ``conn-b`` (same tenant, another EHR) holds hand-written resources for what the generator never
makes: partial dates, absolute references, several codings, reference ranges and interpretations, absent
optional fields, a tombstone, and ``b-pat1``, the same person as ``conn-a``'s ``pat0`` (a shared MRN).
Connection ``conn-c`` (``tenant-2``) has a patient with that MRN too: tenants are never linked to each other.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sandbox.data.generator import Generator as SandboxGenerator
from sandbox.data.ids import COMPARTMENT_TYPES
from tests.pgserver import create_database
from warehouse import AttachmentRef, LandingZone, Warehouse, open_warehouse

Resource = dict[str, Any]
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
SHARED_MRN = "MRN7-000000"  # the sandbox's pat0 (seed 7)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
B_BASE = "https://ehr-b.example/fhir"
DOC_SHA = "ab" * 32


def _meta(ts: str = "2025-06-01T00:00:00Z") -> dict[str, str]:
    return {"versionId": "1", "lastUpdated": ts}


def _cc(*codings: tuple[str, str, str], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}
    if text is not None:
        out["text"] = text
    return out


def _r(resource_type: str, rid: str, **fields: Any) -> Resource:
    return {"resourceType": resource_type, "id": rid, "meta": _meta(), **fields}


def _b_patients() -> list[Resource]:
    return [
        _r(
            "Patient",
            "b-pat1",
            gender="male",
            birthDate="1946-11",
            name=[{"family": "Mensah", "given": ["Mateo", "K"]}],
            identifier=[{"system": MRN_SYSTEM, "value": SHARED_MRN}, {"system": "urn:ehr-b:mrn", "value": "B-0001"}],
            deceasedBoolean=False,
        ),
        _r("Patient", "b-pat2"),  # nothing optional at all
    ]


def _b_observations() -> list[Resource]:
    creatinine = _cc(
        (LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), ("urn:ehr-b:lab", "CREAT", "Creat")
    )
    lab = [{"coding": [{"code": "laboratory"}]}]
    return [
        _r(
            "Observation",
            "b-obs1",
            status="final",
            category=lab,
            code=creatinine,
            subject={"reference": f"{B_BASE}/Patient/b-pat1"},
            effectiveDateTime="2025-03",
            valueQuantity={"value": 1.9, "unit": "mg/dL", "code": "mg/dL"},
            referenceRange=[{"low": {"value": 0.6, "unit": "mg/dL"}, "high": {"value": 1.2, "unit": "mg/dL"}}],
            interpretation=[{"coding": [{"code": "H", "display": "High"}]}],
        ),
        _r(
            "Observation",
            "b-obs2",
            status="final",
            category=lab,
            code=creatinine,
            subject={"reference": "Patient/b-pat1"},
            effectiveDateTime="2024-12-01T08:00:00Z",
            valueQuantity={"value": 1.1, "unit": "mg/dL"},
            referenceRange=[{"low": {"value": 0.6}, "high": {"value": 1.2}}],
        ),
        _r(
            "Observation",
            "b-obs3",
            status="preliminary",
            code={"text": "Nurse note"},
            subject={"reference": "Patient/b-pat2"},
            effectivePeriod={"start": "2025-02-10"},
            valueString="comfortable",
        ),
        _r(
            "Observation",
            "b-gone",
            status="final",
            code=creatinine,
            subject={"reference": "Patient/b-pat1"},
            valueQuantity={"value": 9.9},
        ),
    ]


def _b_clinical() -> dict[str, list[Resource]]:
    pat = {"reference": "Patient/b-pat1"}
    return {
        "Encounter": [
            _r(
                "Encounter",
                "b-enc1",
                status="finished",
                subject=pat,
                period={"start": "2025-03"},
                **{"class": {"code": "AMB"}},
            )
        ],
        "Condition": [
            _r(
                "Condition",
                "b-cond1",
                subject={"reference": f"{B_BASE}/Patient/b-pat1"},
                clinicalStatus={"coding": [{"code": "active"}]},
                code=_cc(
                    (SNOMED, "44054006", "Diabetes mellitus type 2"),
                    ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "Type 2 diabetes"),
                ),
                onsetPeriod={"start": "2019"},
            ),
            _r(
                "Condition",
                "b-cond2",
                subject=pat,
                clinicalStatus={"coding": [{"code": "resolved"}]},
                code=_cc(text="Sprained ankle"),
                onsetString="last summer",
                abatementDateTime="2024-09-01",
            ),
        ],
        "MedicationRequest": [
            _r(
                "MedicationRequest",
                "b-med1",
                status="active",
                intent="order",
                subject=pat,
                authoredOn="2025-01-15",
                medicationCodeableConcept=_cc(
                    ("http://www.nlm.nih.gov/research/umls/rxnorm", "860975", "metformin 500 MG"),
                    ("http://hl7.org/fhir/sid/ndc", "0093-1048", "Metformin 500mg tab"),
                ),
                dosageInstruction=[{"text": "500 mg twice daily"}],
            ),
            _r(
                "MedicationRequest",
                "b-med2",
                status="stopped",
                intent="order",
                subject=pat,
                medicationCodeableConcept={"text": "aspirin"},
            ),
        ],
        "Procedure": [
            _r(
                "Procedure",
                "b-proc1",
                status="completed",
                subject=pat,
                performedPeriod={"start": "2025-03-02"},
                code=_cc(
                    (SNOMED, "73761001", "Colonoscopy"), ("http://www.ama-assn.org/go/cpt", "45378", "Colonoscopy")
                ),
            )
        ],
        "DiagnosticReport": [
            _r(
                "DiagnosticReport",
                "b-dxr1",
                status="final",
                subject=pat,
                conclusion="Creatinine high",
                code=_cc((LOINC, "24323-8", "Metabolic panel"), ("urn:ehr-b:panel", "CMP", "CMP")),
                effectivePeriod={"start": "2025-03"},
            )
        ],
        "Immunization": [
            _r(
                "Immunization",
                "b-imm1",
                status="completed",
                patient=pat,
                occurrenceString="childhood",
                vaccineCode=_cc(
                    ("http://hl7.org/fhir/sid/cvx", "03", "MMR"),
                    ("http://hl7.org/fhir/sid/ndc", "0006-4681", "M-M-R II"),
                ),
            )
        ],
        "AllergyIntolerance": [
            _r(
                "AllergyIntolerance",
                "b-alg1",
                patient=pat,
                category=["food"],
                code=_cc((SNOMED, "91935009", "Peanut allergy"), ("urn:ehr-b:allergy", "PNT", "Peanut")),
                onsetAge={"value": 2, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
                reaction=[
                    {
                        "severity": "severe",
                        "onset": "2024-08-14",
                        "manifestation": [
                            _cc((SNOMED, "39579001", "Anaphylaxis")),
                            _cc((SNOMED, "126485001", "Urticaria")),
                        ],
                    },
                    {"severity": "mild", "manifestation": [_cc((SNOMED, "418290006", "Itching"))]},
                    {  # coded first in the EHR's own system: found by its SNOMED CT code in the coding view only
                        "severity": "moderate",
                        "onset": "2025-02",
                        "substance": _cc((SNOMED, "762952008", "Peanut")),
                        "manifestation": [
                            _cc(
                                ("urn:ehr-b:reaction", "ANA", "Anaphylactic reaction"),
                                (SNOMED, "39579001", "Anaphylaxis"),
                            ),
                        ],
                    },
                ],
                lastReactionOccurrence="2025-02",
            )
        ],
        "CarePlan": [_r("CarePlan", "b-cp1", status="active", intent="plan", subject=pat)],
        "DocumentReference": [
            _r(
                "DocumentReference",
                "b-doc1",
                status="current",
                subject=pat,
                date="2025-03-02T10:00:00Z",
                type=_cc((LOINC, "18842-5", "Discharge summary")),
                content=[{"attachment": {"contentType": "application/pdf", "url": f"{B_BASE}/Binary/b-bin1"}}],
            ),
            _r("DocumentReference", "b-doc2", status="current", subject=pat),
        ],
    }


def sandbox_resources(patients: int = 4) -> dict[str, list[Resource]]:
    """The sandbox generator's patients (seed 7), grouped by type (Binary left out: not an analyst table)."""
    gen = SandboxGenerator(seed=7, patients=patients)
    out: dict[str, list[Resource]] = defaultdict(list)
    for index in range(patients):
        for res in gen.patient_resources(index, COMPARTMENT_TYPES):
            out[res["resourceType"]].append(res)
    return dict(out)


def _land(
    wh: Warehouse, zone: LandingZone, conn: str, tenant: str, base: str, by_type: dict[str, list[Resource]]
) -> None:
    for rtype, resources in sorted(by_type.items()):
        with zone.writer(conn, rtype, "run-1", f"{base}/{rtype}?_count=100", tenant) as w:
            for res in resources:
                w.add_line(orjson.dumps(res))
        wh.upsert(w.result)


def load_analyst_warehouse(wh: Warehouse, landing_root: Path) -> None:
    """Land and upsert the three connections, tombstone one row, record one attachment, refresh the views."""
    zone = LandingZone(landing_root)
    _land(wh, zone, "conn-a", "tenant-1", "https://ehr-a.example/fhir", sandbox_resources())
    b = {"Patient": _b_patients(), "Observation": _b_observations(), **_b_clinical()}
    _land(wh, zone, "conn-b", "tenant-1", B_BASE, b)
    other = [_r("Patient", "c-pat1", identifier=[{"system": MRN_SYSTEM, "value": SHARED_MRN}], birthDate="2001")]
    _land(wh, zone, "conn-c", "tenant-2", "https://ehr-c.example/fhir", {"Patient": other})
    wh.tombstone("conn-b", "Observation", ["b-gone"], datetime(2025, 7, 1, tzinfo=UTC))
    wh.record_attachment(
        "conn-b", f"{B_BASE}/Binary/b-bin1", AttachmentRef(DOC_SHA, 42, "application/pdf", landing_root / DOC_SHA)
    )
    wh.refresh_flat_tables()


def _open_loaded(request: pytest.FixtureRequest, backend: str) -> Generator[Warehouse, None, None]:
    root = request.getfixturevalue("tmp_path_factory").mktemp(f"analyst-{backend}")
    if backend == "duckdb":
        target = str(root / "wh.duckdb")
    else:
        target = create_database(request.getfixturevalue("pg_server"), f"analyst_{uuid.uuid4().hex[:12]}")
    with open_warehouse(target) as wh:
        load_analyst_warehouse(wh, root / "landing")
        yield wh


@pytest.fixture(scope="module", params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def analyst_wh(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    """The analyst warehouse on one backend (each test runs on both)."""
    yield from _open_loaded(request, request.param)


@pytest.fixture(scope="module")
def analyst_pair(request: pytest.FixtureRequest) -> Iterator[tuple[Warehouse, Warehouse]]:
    """The same analyst warehouse on DuckDB and on PostgreSQL, to compare answers."""
    duck = _open_loaded(request, "duckdb")
    pg = _open_loaded(request, "postgres")
    try:
        yield next(duck), next(pg)
    finally:
        duck.close()
        pg.close()
