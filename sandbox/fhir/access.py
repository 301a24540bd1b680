"""Bearer-token checks and SMART scope enforcement on the FHIR API (SAL-22)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from sandbox.data.ids import COMPARTMENT_TYPES, parse_id, patient_index_of_reference
from sandbox.data.store import patient_of
from sandbox.fhir.responses import FhirFailure
from sandbox.oauth.scopes import Grant, filter_matches
from sandbox.oauth.state import TokenRecord

if TYPE_CHECKING:
    from sandbox.state import SandboxState

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ehrsync-sandbox", error="invalid_token"'}


def bearer(st: SandboxState, request: Request) -> TokenRecord:
    """The live access token of the request, or 401 with an OperationOutcome."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise FhirFailure(401, "login", "a Bearer access token is required", _CHALLENGE)
    rec = st.auth.lookup(header[7:].strip(), "access")
    if rec is None or not rec.live(st.clock.timestamp()):
        raise FhirFailure(401, "expired", "access token is invalid, revoked or expired", _CHALLENGE)
    return rec


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
