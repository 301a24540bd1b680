"""SMART scopes in plain words for the patient's consent summary."""

from __future__ import annotations

import re

__all__ = ["describe_scopes"]

_RESOURCE_WORDS = {
    "*": "your whole health record",
    "Patient": "your name, birth date and contact details",
    "Observation": "test results and vital signs",
    "Condition": "health conditions and problems",
    "MedicationRequest": "medications",
    "AllergyIntolerance": "allergies",
    "Immunization": "immunizations",
    "Procedure": "procedures",
    "Encounter": "visits",
    "DocumentReference": "clinical notes and documents",
    "DiagnosticReport": "lab and imaging reports",
}
_FIXED = {
    "openid": "Confirm who you are",
    "fhirUser": "Confirm who you are",
    "profile": "Confirm who you are",
    "offline_access": "Keep your record up to date until you disconnect",
    "online_access": "Keep your record up to date while you stay signed in",
}
_SCOPE_RE = re.compile(r"^(patient|user|system)/([A-Za-z*]+)\.([a-z*]+)")


def _verbs(perm: str) -> str:
    if perm in ("read", "rs", "r", "s"):
        return "Read"
    if perm in ("*", "cruds"):
        return "Read and update"
    if "c" in perm or "u" in perm or perm == "write":
        return "Add to" if "r" not in perm else "Read and add to"
    return "Read"


def describe_scopes(scopes: str) -> list[str]:
    """One sentence per distinct permission, in request order; launch scopes need no explanation."""
    lines: list[str] = []
    for scope in scopes.split():
        text: str | None = _FIXED.get(scope)
        m = _SCOPE_RE.match(scope)
        if m:
            what = _RESOURCE_WORDS.get(m.group(2), m.group(2))
            text = f"{_verbs(m.group(3))} {what}"
        if text and text not in lines:
            lines.append(text)
    return lines
