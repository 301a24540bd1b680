"""Per-type builders for a patient's compartment: cheap dict templates (the bulk hot path runs these)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sandbox.data import vocab
from sandbox.data.documents import binaries, documents
from sandbox.data.skeleton import Encounter, Skeleton
from sandbox.data.timefmt import ANCHOR_TS, DAY, day_str, instant

Resource = dict[str, Any]


def _meta(ts: int) -> dict[str, str]:
    return {"versionId": "1", "lastUpdated": instant(min(ts, ANCHOR_TS - 60))}


def _after(rng: random.Random, enc: Encounter) -> int:
    return enc.end + rng.randint(60, 7 * DAY)


def _quantity(rng: random.Random, low: float, high: float, unit: str, code: str, places: int) -> dict[str, Any]:
    value: float = round(rng.uniform(low, high), places)
    if places == 0:
        value = int(value)
    return {"value": value, "unit": unit, "system": vocab.UCUM, "code": code}


def patient(sk: Skeleton) -> list[Resource]:
    city, state, postal = vocab.CITIES[sk.city]
    return [
        {
            "resourceType": "Patient",
            "id": sk.id,
            "meta": _meta(sk.updated),
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
                "meta": _meta(_after(rng, enc)),
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


def _obs(oid: str, sk: Skeleton, enc: Encounter, cat: Any, code: Any, when: int, meta_ts: int) -> Resource:
    t = instant(when)
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": _meta(meta_ts),
        "status": "final",
        "category": cat,
        "code": code,
        "subject": {"reference": sk.ref},
        "encounter": {"reference": f"Encounter/{enc.id}"},
        "effectiveDateTime": t,
        "issued": t,
        "performer": [{"reference": f"Practitioner/prac{enc.practitioner}"}],
    }


def observations(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(2)
    out: list[Resource] = []
    k = 0
    for enc in sk.encounters:
        when = enc.start + 600
        meta_ts = _after(rng, enc)
        for code, low, high, unit, ucum, places in vocab.VITALS:
            o = _obs(f"obs{sk.index}-{k}", sk, enc, vocab.VITAL_CAT, code, when, meta_ts)
            o["valueQuantity"] = _quantity(rng, low, high, unit, ucum, places)
            out.append(o)
            k += 1
        bp = _obs(f"obs{sk.index}-{k}", sk, enc, vocab.VITAL_CAT, vocab.BP_CODE, when, meta_ts)
        bp["component"] = [
            {"code": vocab.BP_SYS, "valueQuantity": _quantity(rng, 100, 160, "mmHg", "mm[Hg]", 0)},
            {"code": vocab.BP_DIA, "valueQuantity": _quantity(rng, 60, 100, "mmHg", "mm[Hg]", 0)},
        ]
        out.append(bp)
        k += 1
        if enc.has_labs:
            for code, low, high, unit, ucum, places in vocab.LABS:
                o = _obs(f"obs{sk.index}-{k}", sk, enc, vocab.LAB_CAT, code, enc.end, meta_ts + 3600)
                o["valueQuantity"] = _quantity(rng, low, high, unit, ucum, places)
                out.append(o)
                k += 1
    last = sk.encounters[-1]
    smoking = _obs(f"obs{sk.index}-{k}", sk, last, vocab.SOCIAL_CAT, vocab.SMOKING_CODE, last.start, _after(rng, last))
    smoking["valueCodeableConcept"] = rng.choice(vocab.SMOKING_VALUES)
    out.append(smoking)
    return out


def diagnostic_reports(sk: Skeleton) -> list[Resource]:
    rng = sk.rng(3)
    out: list[Resource] = []
    k = 0  # observation numbering must mirror observations(): vitals per encounter, then labs
    n_vitals = len(vocab.VITALS) + 1
    for j, enc in enumerate(sk.encounters):
        k += n_vitals
        if not enc.has_labs:
            continue
        results = [{"reference": f"Observation/obs{sk.index}-{k + n}"} for n in range(len(vocab.LABS))]
        k += len(vocab.LABS)
        out.append(
            {
                "resourceType": "DiagnosticReport",
                "id": f"dxr{sk.index}-{j}",
                "meta": _meta(_after(rng, enc) + 7200),
                "status": "final",
                "category": vocab.DR_LAB_CAT,
                "code": vocab.LAB_PANEL,
                "subject": {"reference": sk.ref},
                "encounter": {"reference": f"Encounter/{enc.id}"},
                "effectiveDateTime": instant(enc.end),
                "issued": instant(enc.end + 3600),
                "performer": [{"reference": f"Organization/org{sk.organization}"}],
                "result": results,
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
                "meta": _meta(_after(rng, enc)),
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
                "meta": _meta(_after(rng, enc)),
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
                "meta": _meta(_after(rng, enc)),
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
                "meta": _meta(_after(rng, enc)),
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
                "meta": _meta(_after(rng, enc)),
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
            "meta": _meta(_after(rng, enc)),
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
