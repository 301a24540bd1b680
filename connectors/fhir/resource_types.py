"""The FHIR resource types ehrsync syncs, and how each one is tied to a patient.

One list drives scopes (providers), search plans and pipeline assets, so adding a type is one edit here.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

__all__ = [
    "COMMON_SEARCH_PARAMS",
    "ID_RE",
    "PATIENT_COMPARTMENT_PARAM",
    "SYNCED_RESOURCE_TYPES",
    "TYPE_RE",
    "is_synced",
    "patient_search_param",
]

#: What a resource type name and a logical id may look like (FHIR R4 ``id``: 1-64 of A-Z a-z 0-9 - .).
TYPE_RE: Final = re.compile(r"^[A-Z][A-Za-z]{1,63}\Z")
ID_RE: Final = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
#: FHIR R4 search parameters every resource has (``Resource``): all that ``Binary`` has, so a granular scope's
#: filter on any other parameter covers no Binary (SMART 2 finer-grained scopes).
COMMON_SEARCH_PARAMS: Final = frozenset({"_id", "_lastUpdated", "_profile", "_security", "_source", "_tag"})

SYNCED_RESOURCE_TYPES: Final[tuple[str, ...]] = (
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Immunization",
    "Procedure",
    "DiagnosticReport",
    "CarePlan",
    "DocumentReference",
    "Practitioner",
    "Organization",
    "Location",
    "Medication",
)

# Search parameter that restricts a patient-compartment type to one patient. Types not listed here
# (Practitioner, Organization, Location, Medication) are shared reference data, fetched by reference.
PATIENT_COMPARTMENT_PARAM: Final[MappingProxyType[str, str]] = MappingProxyType(
    {
        "Patient": "_id",
        "Encounter": "patient",
        "Observation": "patient",
        "Condition": "patient",
        "MedicationRequest": "patient",
        "AllergyIntolerance": "patient",
        "Immunization": "patient",
        "Procedure": "patient",
        "DiagnosticReport": "patient",
        "CarePlan": "patient",
        "DocumentReference": "patient",
    }
)


def is_synced(resource_type: str) -> bool:
    return resource_type in SYNCED_RESOURCE_TYPES


def patient_search_param(resource_type: str) -> str | None:
    """The parameter linking ``resource_type`` to a patient, or None for non-compartment types.

    Raises ValueError for a type ehrsync does not sync, so a typo never turns into an unscoped search.
    """
    if not is_synced(resource_type):
        raise ValueError(f"{resource_type!r} is not a resource type ehrsync syncs")
    return PATIENT_COMPARTMENT_PARAM.get(resource_type)
