"""SMART scope enforcement on the FHIR API (SAL-22): what a granted token may do with one resource type.

Kept apart from the bearer check (``access``) because bulk export applies the same rules from a worker thread
with no request or server state at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.data.ids import COMPARTMENT_TYPES, parse_id, patient_index_of_reference
from sandbox.data.store import patient_of
from sandbox.fhir.responses import FhirFailure
from sandbox.oauth.scopes import Grant, filter_matches
from sandbox.oauth.state import TokenRecord


@dataclass(frozen=True)
class Permission:
    """What a token may do with one type: an optional compartment and optional granular filters."""

    patient: str | None
    filters: tuple[tuple[tuple[str, str], ...], ...] | None
    system: bool

    def allows(self, resource: dict[str, Any]) -> bool:
        rtype = resource.get("resourceType")
        if self.patient is not None and (rtype in COMPARTMENT_TYPES or rtype == "Binary"):
            # A Binary has no subject: a generated one names its patient in its id; others are not shared.
            parsed = parse_id("Binary", str(resource.get("id"))) if rtype == "Binary" else None
            owner = (parsed[1] if parsed else None) if rtype == "Binary" else patient_of(resource)
            if owner is None or owner != patient_index_of_reference(self.patient):
                return False
        return self.filters is None or any(filter_matches(f, resource) for f in self.filters)


def permission(rec: TokenRecord, resource_type: str, perm: str) -> Permission:
    """403 unless a granted scope allows ``perm`` (c r u d s) on the type."""
    rules = Grant.parse(rec.scope).rules_for(resource_type, perm)
    if not rules:
        raise FhirFailure(403, "forbidden", f"granted scopes do not allow '{perm}' on {resource_type}")
    wide = [r for r in rules if r.context != "patient"]
    patient = None
    if not wide:
        if rec.context.patient is None:
            raise FhirFailure(403, "forbidden", "patient-scoped token has no patient context")
        patient = rec.context.patient
    considered = wide or rules
    filters = None if any(not r.filters for r in considered) else tuple(r.filters for r in considered)
    return Permission(patient, filters, any(r.context == "system" for r in rules))
