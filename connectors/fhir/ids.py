"""FHIR R4 ids as a server names them (datatypes.html#id: ``[A-Za-z0-9\\-\\.]{1,64}``), checked where they enter.

The note outbox stores the ids an EHR names for a note, its Binary and its Provenance (64 characters at most, as
FHIR allows). A server naming something else (a longer id, a number, a path) would make that row's update fail on
PostgreSQL after the note is in the EHR, run after run: such an id is treated as no id named at all, and what was
wrong with it is described by its length or type only (an id may be anything, PHI included).
"""

from __future__ import annotations

from typing import Any

from connectors.fhir.resource_types import ID_RE

__all__ = ["fhir_id", "id_problem", "resource_ids"]


def fhir_id(value: object) -> str | None:
    """``value`` when it is a FHIR id, else None (what the server named cannot be stored or referenced)."""
    return value if isinstance(value, str) and ID_RE.match(value) else None


def id_problem(value: object) -> str:
    """What makes ``value`` no FHIR id, without its text: its length, or its JSON type."""
    if not isinstance(value, str):
        return f"a JSON {type(value).__name__} rather than a string"
    if not value or len(value) > 64:
        return f"{len(value)} characters long, where FHIR allows 1 to 64"
    return f"{len(value)} characters, some of them not allowed in a FHIR id"


def resource_ids(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(id, meta.versionId)`` of a resource a server answered, each None when it is not a FHIR id."""
    meta = resource.get("meta")
    return fhir_id(resource.get("id")), fhir_id(meta.get("versionId")) if isinstance(meta, dict) else None
