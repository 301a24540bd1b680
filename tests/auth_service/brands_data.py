"""Deterministic SMART brands bundles for tests: a few hundred brands, some reachable through the sandbox."""

from __future__ import annotations

import base64
import random
from typing import Any

PORTAL = "http://hl7.org/fhir/StructureDefinition/organization-portal"
BRAND = "http://hl7.org/fhir/StructureDefinition/organization-brand"
_FIRST = ["North", "South", "Valley", "River", "Lake", "Pine", "Cedar", "Harbor", "Summit", "Prairie", "Bay"]
_SECOND = ["Health", "Medical Group", "Clinic", "Family Practice", "Care", "Hospital", "Physicians"]
_CITIES = [("Boston", "MA"), ("Zürich", "ZH"), ("Québec", "QC"), ("São Paulo", "SP"), ("Austin", "TX")]
#: Named brands the tests search for (all reachable through the sandbox endpoint).
KNOWN = ["St. Mary's Medical Center", "Zürich Kinderspital", "Good Health"]


def logo_data_url(letter: str, colour: str) -> str:
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><rect width="40" height="40" rx="6" '
        f'fill="{colour}"/><text x="20" y="27" font-size="20" text-anchor="middle" fill="#fff">{letter}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _org(number: int, name: str, endpoint_ref: str, rng: random.Random) -> dict[str, Any]:
    city, state = rng.choice(_CITIES)
    org: dict[str, Any] = {
        "resourceType": "Organization",
        "id": f"org-{number}",
        "name": name,
        "extension": [
            {
                "url": PORTAL,
                "extension": [
                    {"url": "portalName", "valueString": f"{name.split()[0]} MyChart"},
                    {"url": "portalEndpoint", "valueReference": {"reference": endpoint_ref}},
                ],
            }
        ],
        "address": [{"city": city, "state": state}],
    }
    if number % 3 == 0:
        org["extension"].append(
            {"url": BRAND, "extension": [{"url": "brandLogo", "valueUrl": logo_data_url(name[0], "#0b5cad")}]}
        )
    if number % 7 == 0:
        org["alias"] = [f"Formerly {name.split()[0]} Associates"]
    return org


def brands_bundle(count: int, reachable_base: str, seed: int = 13) -> dict[str, Any]:
    """``count`` brands: every other one (and all of ``KNOWN``) on ``reachable_base``, the rest elsewhere."""
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:ep-reachable",
            "resource": {
                "resourceType": "Endpoint",
                "id": "ep-reachable",
                "status": "active",
                "address": reachable_base,
            },
        },
        {"resource": {"resourceType": "Endpoint", "id": "ep-other", "address": "https://fhir.elsewhere.example/r4"}},
    ]
    names = [*KNOWN]
    while len(names) < count:
        name = f"{rng.choice(_FIRST)} {rng.choice(_FIRST)} {rng.choice(_SECOND)} {len(names)}"
        names.append(name)
    for number, name in enumerate(names):
        ref = "urn:uuid:ep-reachable" if number < len(KNOWN) or number % 2 == 0 else "Endpoint/ep-other"
        entries.append(
            {"fullUrl": f"https://brands.example/Organization/org-{number}", "resource": _org(number, name, ref, rng)}
        )
    return {"resourceType": "Bundle", "type": "collection", "timestamp": "2026-11-30T12:00:00Z", "entry": entries}
