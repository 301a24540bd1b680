"""Deterministic create/update/delete of base data, so incremental syncs have changes to find."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from sandbox.data.ids import patient_id
from sandbox.data.store import DataStore
from sandbox.data.timefmt import instant_of
from sandbox.data.vocab import VITAL_CAT, VITALS

#: Types a mutation may touch: Patient stays, so compartments and groups remain consistent.
MUTABLE_TYPES = ("Observation", "Condition", "MedicationRequest", "Encounter", "Procedure", "Immunization")


@dataclass
class MutationResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _pick(store: DataStore, rng: random.Random, taken: set[str], indexes: Sequence[int]) -> tuple[str, str] | None:
    for _ in range(50):
        index = rng.choice(indexes)
        rtype = rng.choice(MUTABLE_TYPES)
        live = [r for r in store.patient_resources(index, (rtype,)) if f"{rtype}/{r['id']}" not in taken]
        if live:
            r = rng.choice(live)
            return rtype, str(r["id"])
    return None


def mutate(
    store: DataStore,
    create: int,
    update: int,
    delete: int,
    seed: int,
    patient_indexes: Sequence[int] | None = None,
) -> MutationResult:
    """Apply the changes now (server clock); the same seed on the same data picks the same resources.

    ``patient_indexes`` limits the changes to those patients' records (all patients when ``None``).
    """
    rng = random.Random(seed)
    indexes = list(patient_indexes) if patient_indexes else list(range(store.patients))
    result = MutationResult()
    taken: set[str] = set()
    for _ in range(update):
        picked = _pick(store, rng, taken, indexes)
        if picked is None:
            break
        current = dict(store.read(*picked))
        if picked[0] == "Encounter":  # R4 Encounter has no note element
            current["priority"] = {"text": f"reviewed (sandbox mutation {seed})"}
        else:
            current["note"] = [{"text": f"amended by sandbox mutation {seed}"}]
        updated = store.update(current)
        result.updated.append(f"{picked[0]}/{updated['id']}")
        taken.add(result.updated[-1])
    for _ in range(delete):
        picked = _pick(store, rng, taken, indexes)
        if picked is None:
            break
        store.delete(*picked)
        result.deleted.append(f"{picked[0]}/{picked[1]}")
        taken.add(result.deleted[-1])
    for _ in range(create):
        index = rng.choice(indexes)
        code, low, high, unit, ucum, places = rng.choice(VITALS)
        now = instant_of(store.clock.now())
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "category": VITAL_CAT,
            "code": code,
            "subject": {"reference": f"Patient/{patient_id(index)}"},
            "effectiveDateTime": now,
            "issued": now,
            "valueQuantity": {
                "value": round(rng.uniform(low, high), places),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": ucum,
            },
        }
        created = store.create(obs)
        result.created.append(f"Observation/{created['id']}")
    return result
