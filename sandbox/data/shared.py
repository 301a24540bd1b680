"""Resources outside any patient compartment: built once per server (they are few)."""

from __future__ import annotations

import random
from typing import Any

from sandbox.data import vocab
from sandbox.data.skeleton import N_LOCATIONS, N_ORGANIZATIONS, N_PRACTITIONERS
from sandbox.data.timefmt import ANCHOR_TS, DAY, instant

Resource = dict[str, Any]

_ORG_NAMES = ["Riverside Health", "Northgate Clinic", "Lakeshore Medical Group", "Hillcrest Family Practice"]
_PRAC_FAMILY = ["Adeyemi", "Bergstrom", "Chen", "Duarte", "Eriksen", "Farouk"]
_PRAC_GIVEN = ["Alex", "Sam", "Jordan", "Robin", "Casey", "Taylor"]


def _meta(rng: random.Random) -> dict[str, str]:
    return {"versionId": "1", "lastUpdated": instant(ANCHOR_TS - rng.randint(30 * DAY, 900 * DAY))}


def build_shared(seed: int, patients: int) -> dict[str, list[Resource]]:
    """Practitioners, organizations, locations, medications and groups; deterministic per seed."""
    rng = random.Random(seed * 7919 + 17)
    orgs = [
        {
            "resourceType": "Organization",
            "id": f"org{k}",
            "meta": _meta(rng),
            "identifier": [{"system": vocab.NPI, "value": f"1{seed % 1000:03d}{k:06d}"}],
            "active": True,
            "name": _ORG_NAMES[k % len(_ORG_NAMES)],
            "telecom": [{"system": "phone", "value": f"555-01{k:02d}"}],
        }
        for k in range(N_ORGANIZATIONS)
    ]
    pracs = [
        {
            "resourceType": "Practitioner",
            "id": f"prac{k}",
            "meta": _meta(rng),
            "identifier": [{"system": vocab.NPI, "value": f"2{seed % 1000:03d}{k:06d}"}],
            "active": True,
            "name": [{"family": rng.choice(_PRAC_FAMILY), "given": [rng.choice(_PRAC_GIVEN)], "prefix": ["Dr."]}],
        }
        for k in range(N_PRACTITIONERS)
    ]
    locs = [
        {
            "resourceType": "Location",
            "id": f"loc{k}",
            "meta": _meta(rng),
            "status": "active",
            "name": f"{_ORG_NAMES[k % N_ORGANIZATIONS]} site {k}",
            "managingOrganization": {"reference": f"Organization/org{k % N_ORGANIZATIONS}"},
        }
        for k in range(N_LOCATIONS)
    ]
    meds = [
        {
            "resourceType": "Medication",
            "id": f"med{k}",
            "meta": _meta(rng),
            "status": "active",
            "code": vocab.cc(vocab.RXNORM, code, display),
        }
        for k, (code, display) in enumerate(vocab.MEDICATIONS)
    ]
    return {
        "Organization": orgs,
        "Practitioner": pracs,
        "Location": locs,
        "Medication": meds,
        "Group": build_groups(rng, patients),
    }


def group_members(group_no: int, patients: int) -> list[int]:
    """Patient indexes in group ``grp{group_no}``: everyone, every other patient, the first five."""
    if group_no == 0:
        return list(range(patients))
    if group_no == 1:
        return list(range(0, patients, 2))
    return list(range(min(5, patients)))


_GROUP_NAMES = ["All sandbox patients", "Every other patient", "Small cohort"]


def build_groups(rng: random.Random, patients: int) -> list[Resource]:
    groups = []
    for g, name in enumerate(_GROUP_NAMES):
        members = group_members(g, patients)
        groups.append(
            {
                "resourceType": "Group",
                "id": f"grp{g}",
                "meta": _meta(rng),
                "type": "person",
                "actual": True,
                "name": name,
                "quantity": len(members),
                "member": [{"entity": {"reference": f"Patient/pat{i}"}} for i in members],
            }
        )
    return groups
