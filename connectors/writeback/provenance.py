"""Build the FHIR Provenance for a written AI draft (draft-note §8, DWB-82): who assembled it, who verifies it.

The model is described by a *contained* Device, so one create is enough (no Device to create and reference
first). The result is validated against the FHIR R4B model before it leaves this module; it names ids and the
model version only, never note text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from connectors.errors import ConfigurationError

__all__ = ["PARTICIPANT", "ProvenanceDraft", "build_provenance"]

#: The code system of a Provenance agent's type (``assembler``, ``verifier``).
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


@dataclass(frozen=True)
class ProvenanceDraft:
    """The written note and what made it: ``model`` (``produced_by``) and its prompt version, the reviewer."""

    document_id: str
    document_version: str | None
    model: str
    prompt_version: str | None
    reviewer_practitioner_id: str | None
    recorded: datetime


def _agent(code: str, display: str, who: dict[str, str]) -> dict[str, Any]:
    return {"type": {"coding": [{"system": PARTICIPANT, "code": code, "display": display}]}, "who": who}


def build_provenance(draft: ProvenanceDraft) -> dict[str, Any]:
    """The Provenance for ``draft`` (ConfigurationError if it would not be valid FHIR R4)."""
    if draft.recorded.tzinfo is None:
        raise ConfigurationError("provenance times must be timezone-aware")
    version = draft.model if not draft.prompt_version else f"{draft.model} / prompt {draft.prompt_version}"
    device = {
        "resourceType": "Device",
        "id": "model",
        "type": {"text": "software"},
        "deviceName": [{"name": draft.model, "type": "model-name"}],
        "version": [{"value": version}],
    }
    target = f"DocumentReference/{draft.document_id}"
    agents = [_agent("assembler", "Assembler", {"reference": "#model", "display": version})]
    if draft.reviewer_practitioner_id:
        agents.append(_agent("verifier", "Verifier", {"reference": f"Practitioner/{draft.reviewer_practitioner_id}"}))
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "contained": [device],
        "target": [{"reference": f"{target}/_history/{draft.document_version}" if draft.document_version else target}],
        "recorded": draft.recorded.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "activity": {"coding": [{"system": _DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "agent": agents,
    }
    from fhir.resources.R4B.provenance import Provenance  # on first use, as in note.py: only a build needs it

    try:
        Provenance.model_validate(resource)
    except ValidationError as exc:
        raise ConfigurationError(f"the Provenance is not valid FHIR R4: {exc.error_count()} problem(s)") from None
    return resource
