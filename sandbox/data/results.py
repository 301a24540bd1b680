"""Observations and the lab reports that cite them, built together because a report names its results by number."""

from __future__ import annotations

import random
from typing import Any

from sandbox.data import vocab
from sandbox.data.skeleton import Encounter, Skeleton, base_meta, updated_after
from sandbox.data.timefmt import instant

Resource = dict[str, Any]


def _quantity(rng: random.Random, low: float, high: float, unit: str, code: str, places: int) -> dict[str, Any]:
    value: float = round(rng.uniform(low, high), places)
    if places == 0:
        value = int(value)
    return {"value": value, "unit": unit, "system": vocab.UCUM, "code": code}


def _obs(oid: str, sk: Skeleton, enc: Encounter, cat: Any, code: Any, when: int, meta_ts: int) -> Resource:
    t = instant(when)
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": base_meta(meta_ts),
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
        meta_ts = updated_after(rng, enc)
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
    smoking = _obs(
        f"obs{sk.index}-{k}", sk, last, vocab.SOCIAL_CAT, vocab.SMOKING_CODE, last.start, updated_after(rng, last)
    )
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
                "meta": base_meta(updated_after(rng, enc) + 7200),
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
