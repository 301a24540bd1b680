"""Refuse a note write before any EHR call when flags, granted scopes or the server forbid it (DWB-40..43).

The gate reads only what the server told us: the CapabilityStatement and the *granted* scope string. What we
asked for does not matter (DWB-41).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from connectors.errors import FhirError, WriteNotSupportedError
from connectors.fhir.capability import (
    INTERACTIONS,
    NOTE_WRITE,
    declared_interactions,
    described,
    interactions_of,
    statement_problem,
)
from connectors.writeback.scope_filters import query_applies
from connectors.writeback.vendor_check import check_vendor_writes_notes

__all__ = [
    "WriteCapability",
    "WriteFlags",
    "check_note_write",
    "check_switches",
    "scopes_allow_binary_create",
    "scopes_allow_note_create",
    "scopes_allow_provenance_create",
]

#: The other types whose interactions the gate reads (Binary for a large note, Provenance beside it).
_EXTRA_TYPES = INTERACTIONS.of("Binary", "Provenance")

#: A resource scope: v1 ``.write``/``.*`` or v2 ``.cruds`` letters, on a type or ``*``, and a v2 filter's query.
_SCOPE_RE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.(write|\*|c?r?u?d?s?)(\?(.+))?\Z")
_CLINICAL_NOTE = "clinical-note"


@dataclass(frozen=True)
class WriteFlags:
    """Every switch that must be on: service-wide, the tenant's kill switch, the note feature, the vendor profile."""

    service_enabled: bool
    tenant_enabled: bool
    note_create_enabled: bool
    vendor_allows_notes: bool = True


@dataclass(frozen=True)
class WriteCapability:
    """What the server advertises for DocumentReference (recorded per DWB-40)."""

    conditional_create: bool
    binary_create: bool  # advertised by the server and covered by the granted scopes (DWB-18, DWB-41)
    supported_profiles: tuple[str, ...]
    provenance_create: bool = False  # DWB-82: advertised by the server and covered by the granted scopes


def _category_filter_ok(query: str) -> bool:
    """A v2 granular filter still allows a clinical note only when it is ``category=...clinical-note``."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key != "category" or not unquote(value).endswith(_CLINICAL_NOTE):
            return False
    return True


def _creating(granted: str, resource_type: str) -> Iterator[tuple[bool, str | None]]:
    """``(v1, query)`` of each granted scope that creates ``resource_type`` (v1 ``.write``/``.*``, v2 with ``c``, on
    the type or ``*``); ``query`` is its filter, None when it has none."""
    for scope in granted.split():
        m = _SCOPE_RE.match(scope)
        if not m or m.group(2) not in (resource_type, "*"):
            continue
        v1 = m.group(3) in ("write", "*")
        if v1 or "c" in m.group(3):
            yield v1, m.group(5)


def scopes_allow_note_create(granted: str) -> bool:
    """True when a granted scope lets us create a DocumentReference: v1 ``.write``/``.*`` with no filter, or v2
    ``.c`` with none or one to clinical notes (``_category_filter_ok``)."""
    return any(
        query is None or (not v1 and _category_filter_ok(query))
        for v1, query in _creating(granted, "DocumentReference")
    )


def _scopes_allow_create(granted: str, resource_type: str) -> bool:
    """True when a granted scope lets us create ``resource_type`` (``_creating``). A granular filter counts only on
    parameters the type has (``query_applies``, the rule the scopes asked for follow):
    ``patient/*.c?category=clinical-note`` covers no Binary or Provenance, whose create it would only have refused
    403."""
    return any(query_applies(resource_type, query) for _, query in _creating(granted, resource_type))


def scopes_allow_binary_create(granted: str) -> bool:
    """True when a granted scope covers Binary create (DWB-18/41): Binary has no parameter of its own, so any
    filter but one on the parameters every resource has covers none."""
    return _scopes_allow_create(granted, "Binary")


def scopes_allow_provenance_create(granted: str) -> bool:
    """True when a granted scope covers Provenance create (DWB-82): a filter on a parameter Provenance lacks
    (``category``) covers none, so no Provenance POST is sent that could only be refused."""
    return _scopes_allow_create(granted, "Provenance")


def check_switches(flags: WriteFlags) -> None:
    """``WriteNotSupportedError`` when a switch (or the vendor's write profile) allows no note write: decided without
    the CapabilityStatement, so a caller that needs nothing else from it (a Provenance, DWB-82) reads none."""
    check_vendor_writes_notes(flags.vendor_allows_notes)
    if not (flags.service_enabled and flags.tenant_enabled and flags.note_create_enabled):
        raise WriteNotSupportedError(
            "vendor_disabled", "note write-back is switched off for this tenant or service-wide"
        )


def check_note_write(
    capabilities: Mapping[str, Any],
    granted_scopes: str,
    flags: WriteFlags,
) -> WriteCapability:
    """Return what the server supports, or raise ``WriteNotSupportedError`` with the DWB-42 ``reason``.

    Order matters: a vendor whose write profile declares no note write answers ``vendor_disabled`` first, in words
    naming the vendor's profile (``check_vendor_writes_notes``: the one answer that never changes), then a switch
    turned off, in the switches' words (DWB-43), neither looking further. A type described in several server
    ``rest`` entries (``connectors.fhir.capability``) may be created when any of them declares create; conditional
    create is trusted only when every entry declaring create says so (If-None-Exist sent to a configuration that
    ignores it would let a repeated POST duplicate the note). A slip in what this reads (DocumentReference's
    ``interaction`` or ``supportedProfile``, Binary's or Provenance's ``interaction``, sent as a bare object) is a
    ``FhirError`` naming it, as an unreadable statement is (the note waits: the server may mend it), never read as
    declaring no create; one elsewhere (another type's) is not.
    """
    check_switches(flags)
    if problem := statement_problem(capabilities, NOTE_WRITE) or statement_problem(capabilities, _EXTRA_TYPES):
        raise FhirError(f"the CapabilityStatement cannot be read for {NOTE_WRITE.what}: {problem}", 200)
    creating = [r for r in described(capabilities, "DocumentReference") if "create" in interactions_of(r)]
    if not creating:
        raise WriteNotSupportedError(
            "no_create_interaction", "the server's CapabilityStatement does not allow DocumentReference create"
        )
    if not scopes_allow_note_create(granted_scopes):
        raise WriteNotSupportedError("missing_scope", "the granted scopes do not include DocumentReference create")
    described_doc = described(capabilities, "DocumentReference")
    profiles = (p for r in described_doc for p in r.get("supportedProfile") or [] if isinstance(p, str))
    return WriteCapability(
        conditional_create=all(r.get("conditionalCreate") is True for r in creating),
        binary_create="create" in declared_interactions(capabilities, "Binary")
        and scopes_allow_binary_create(granted_scopes),
        supported_profiles=tuple(dict.fromkeys(profiles)),
        provenance_create="create" in declared_interactions(capabilities, "Provenance")
        and scopes_allow_provenance_create(granted_scopes),
    )
