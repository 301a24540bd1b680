"""Resource id scheme: the id names its type and patient, so a read regenerates exactly one patient."""

from __future__ import annotations

import re

#: type -> id prefix for resources generated inside a patient's compartment (id = prefix + index + "-" + k).
PATIENT_PREFIX: dict[str, str] = {
    "Patient": "pat",
    "Encounter": "enc",
    "Observation": "obs",
    "Condition": "cond",
    "MedicationRequest": "medrx",
    "AllergyIntolerance": "alg",
    "Immunization": "imm",
    "Procedure": "proc",
    "DiagnosticReport": "dxr",
    "CarePlan": "cp",
    "DocumentReference": "doc",
    "Binary": "bin",
}
#: type -> id prefix for shared (non-compartment) resources (id = prefix + k).
SHARED_PREFIX: dict[str, str] = {
    "Practitioner": "prac",
    "Organization": "org",
    "Location": "loc",
    "Medication": "med",
    "Group": "grp",
}
PATIENT_TYPES: tuple[str, ...] = tuple(PATIENT_PREFIX)
SHARED_TYPES: tuple[str, ...] = tuple(SHARED_PREFIX)
ALL_TYPES: tuple[str, ...] = PATIENT_TYPES + SHARED_TYPES
#: Types in the Patient compartment (Binary is reachable through DocumentReference, not the compartment).
COMPARTMENT_TYPES: tuple[str, ...] = tuple(t for t in PATIENT_TYPES if t != "Binary")

_PREFIX_TYPE = {p: t for t, p in {**PATIENT_PREFIX, **SHARED_PREFIX}.items()}
_ID_RE = re.compile(r"^([a-z]+)(\d+)(?:-(\d+))?$")


def patient_id(index: int) -> str:
    return f"pat{index}"


def parse_id(resource_type: str, resource_id: str) -> tuple[bool, int] | None:
    """``(is_shared, number)`` for a generated id of that type; None for ids the generator never made."""
    m = _ID_RE.match(resource_id)
    if not m or _PREFIX_TYPE.get(m.group(1)) != resource_type:
        return None
    shared = resource_type in SHARED_PREFIX
    if shared == (m.group(3) is not None) and resource_type != "Patient":
        return None
    if resource_type == "Patient" and m.group(3) is not None:
        return None
    return shared, int(m.group(2))


def patient_index_of_reference(ref: str) -> int | None:
    """Patient index of ``Patient/pat12``, ``pat12`` or an absolute ``.../Patient/pat12`` reference."""
    tail = ref.rstrip("/").rsplit("/", 1)[-1]
    if "/" in ref and ref.rstrip("/").rsplit("/", 2)[-2] != "Patient":
        return None
    parsed = parse_id("Patient", tail)
    return parsed[1] if parsed else None
