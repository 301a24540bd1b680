"""Per-type builders for a patient's compartment: cheap dict templates (the bulk hot path runs these).

Observations and DiagnosticReports are in ``results``, notes and their Binaries in ``documents``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.data import vocab
from sandbox.data.documents import binaries, documents
from sandbox.data.results import diagnostic_reports, observations
from sandbox.data.skeleton import Skeleton, base_meta, updated_after
from sandbox.data.timefmt import DAY, day_str, instant

Resource = dict[str, Any]


def patient(sk: Skeleton) -> list[Resource]:
    city, state, postal = vocab.CITIES[sk.city]
    return [
        {
            "resourceType": "Patient",
            "id": sk.id,
            "meta": base_meta(sk.updated),
            "identifier": [{"system": vocab.MRN, "value": f"MRN{sk.seed}-{sk.index:06d}"}],
            "active": True,
            "name": [{"use": "official", "family": sk.family, "given": [sk.given]}],
            "gender": "female" if sk.female else "male",
            "birthDate": day_str(sk.birth_day),
            "address": [
                {
                    "line": [f"{sk.street_no} {vocab.STREETS[sk.street]}"],
                    "city": city,
                    "state": state,
                    "postalCode": postal,
                    "country": "US",
                }
            ],
            "telecom": [{"system": "phone", "value": f"555-{sk.index % 10000:04d}", "use": "home"}],
            "generalPractitioner": [{"reference": f"Practitioner/prac{sk.practitioner}"}],
            "managingOrganization": {"reference": f"Organization/org{sk.organization}"},
        }
    ]


def encounters(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(1)
    out = []
    for enc in sk.encounters:
        out.append(
            {
                "resourceType": "Encounter",
                "id": enc.id,
                "meta": base_meta(updated_after(rng, enc)),
                "status": "finished",
                "class": vocab.ENC_CLASSES[enc.klass],
                "type": [rng.choice(vocab.ENC_TYPES)],
                "subject": {"reference": sk.ref},
                "participant": [{"individual": {"reference": f"Practitioner/prac{enc.practitioner}"}}],
                "period": {"start": instant(enc.start), "end": instant(enc.end)},
                "location": [{"location": {"reference": f"Location/loc{enc.location}"}}],
                "serviceProvider": {"reference": f"Organization/org{sk.organization}"},
            }
        )
    return out


def conditions(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(4)
    out = []
    for k, code in enumerate(rng.sample(vocab.CONDITIONS, rng.randint(1, 4))):
        enc = rng.choice(sk.encounters)
        out.append(
            {
                "resourceType": "Condition",
                "id": f"cond{sk.index}-{k}",
                "meta": base_meta(updated_after(rng, enc)),
                "clinicalStatus": vocab.COND_CLINICAL if rng.random() < 0.8 else vocab.COND_RESOLVED,
                "verificationStatus": vocab.COND_VERIFIED,
                "category": vocab.COND_CAT,
                "code": code,
                "subject": {"reference": sk.ref},
                "encounter": {"reference": f"Encounter/{enc.id}"},
                "onsetDateTime": instant(enc.start - rng.randint(0, 400) * DAY),
                "recordedDate": instant(enc.start),
                "recorder": {"reference": f"Practitioner/prac{enc.practitioner}"},
            }
        )
    return out


def medication_requests(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(5)
    out = []
    for k, med in enumerate(rng.sample(range(len(vocab.MEDICATIONS)), rng.randint(1, 5))):
        enc = rng.choice(sk.encounters)
        out.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"medrx{sk.index}-{k}",
                "meta": base_meta(updated_after(rng, enc)),
                "status": "active" if rng.random() < 0.7 else "completed",
                "intent": "order",
                "medicationReference": {"reference": f"Medication/med{med}", "display": vocab.MEDICATIONS[med][1]},
                "subject": {"reference": sk.ref},
                "encounter": {"reference": f"Encounter/{enc.id}"},
                "authoredOn": instant(enc.start + 1200),
                "requester": {"reference": f"Practitioner/prac{enc.practitioner}"},
                "dosageInstruction": [{"text": "Take 1 tablet by mouth once daily"}],
            }
        )
    return out


def allergies(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(6)
    out = []
    for k, code in enumerate(rng.sample(vocab.ALLERGIES, rng.randint(0, 2))):
        enc = rng.choice(sk.encounters)
        out.append(
            {
                "resourceType": "AllergyIntolerance",
                "id": f"alg{sk.index}-{k}",
                "meta": base_meta(updated_after(rng, enc)),
                "clinicalStatus": vocab.ALLERGY_CLINICAL,
                "verificationStatus": vocab.ALLERGY_VERIFIED,
                "type": "allergy",
                "category": ["medication" if k == 0 else "environment"],
                "criticality": "low",
                "code": code,
                "patient": {"reference": sk.ref},
                "recordedDate": instant(enc.start),
                "reaction": [{"manifestation": [rng.choice(vocab.REACTIONS)], "severity": "mild"}],
            }
        )
    return out


def immunizations(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(7)
    out = []
    for k, enc in enumerate(rng.sample(sk.encounters, min(len(sk.encounters), rng.randint(1, 4)))):
        out.append(
            {
                "resourceType": "Immunization",
                "id": f"imm{sk.index}-{k}",
                "meta": base_meta(updated_after(rng, enc)),
                "status": "completed",
                "vaccineCode": rng.choice(vocab.VACCINES),
                "patient": {"reference": sk.ref},
                "encounter": {"reference": f"Encounter/{enc.id}"},
                "occurrenceDateTime": instant(enc.start + 1800),
                "primarySource": True,
                "location": {"reference": f"Location/loc{enc.location}"},
                "lotNumber": f"LOT{rng.randint(10000, 99999)}",
            }
        )
    return out


def procedures(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(8)
    out = []
    for k in range(rng.randint(0, 3)):
        enc = rng.choice(sk.encounters)
        out.append(
            {
                "resourceType": "Procedure",
                "id": f"proc{sk.index}-{k}",
                "meta": base_meta(updated_after(rng, enc)),
                "status": "completed",
                "code": rng.choice(vocab.PROCEDURES),
                "subject": {"reference": sk.ref},
                "encounter": {"reference": f"Encounter/{enc.id}"},
                "performedDateTime": instant(enc.start + 2400),
                "performer": [{"actor": {"reference": f"Practitioner/prac{enc.practitioner}"}}],
            }
        )
    return out


def care_plans(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(9)
    enc = sk.encounters[-1]
    activity = rng.choice(vocab.CAREPLAN_ACTIVITIES)
    return [
        {
            "resourceType": "CarePlan",
            "id": f"cp{sk.index}-0",
            "meta": base_meta(updated_after(rng, enc)),
            "status": "active",
            "intent": "plan",
            "category": vocab.CAREPLAN_CAT,
            "title": "Care plan",
            "description": activity["text"],
            "subject": {"reference": sk.ref},
            "encounter": {"reference": f"Encounter/{enc.id}"},
            "period": {"start": instant(enc.start)},
            "author": {"reference": f"Practitioner/prac{enc.practitioner}"},
            "activity": [{"detail": {"status": "in-progress", "code": activity}}],
        }
    ]


BUILDERS: dict[str, Callable[[Skeleton], list[Resource]]] = {
    "Patient": patient,
    "Encounter": encounters,
    "Observation": observations,
    "Condition": conditions,
    "MedicationRequest": medication_requests,
    "AllergyIntolerance": allergies,
    "Immunization": immunizations,
    "Procedure": procedures,
    "DiagnosticReport": diagnostic_reports,
    "CarePlan": care_plans,
    "DocumentReference": documents,
    "Binary": binaries,
}
