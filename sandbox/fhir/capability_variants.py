"""``capability_variants``: the sandbox's CapabilityStatement written as other servers write theirs.

Legal variants (FHIR R4 allows each; ehrsync must read them as the default statement):

- ``params_in_later_entry``: the first server ``rest`` entry describes each type without ``searchParam``; a second
  server entry after it describes each type ``search-type`` with the search parameters (cpb-9 forbids describing a
  type twice only within one entry).
- ``unprefixed_params``: each search parameter named without its leading ``_`` (``lastUpdated``), the standard one
  identified by its ``definition`` canonical with a version (``.../SearchParameter/Resource-lastUpdated|4.0.1``).
- ``common_params``: the types carry no ``searchParam``; the parameters are listed once at ``rest.searchParam``.
- ``decorated``: extensions and extra elements at every level, ``kind: capability``, ``fhirVersion`` 4.0.0, an XML
  first ``format`` list, no ``software``/``implementation``, a ``resource`` entry with no ``interaction`` and no
  ``searchParam``, the system export named otherwise and identified by its versioned canonical only.
- ``no_system_export``: no system ``rest.operation`` (a server exporting only patients and groups).
- ``unread_slips``: bare objects and other JSON kinds, as real servers ship them, only where no reader of ehrsync
  goes: a type's one ``operation`` as the bare object, ``implementation`` as an array, ``messaging`` and
  ``document`` as bare objects, ``rest.compartment`` as a bare string, a ``mode: client`` entry's one ``resource``
  as the bare object. Each reader reads such a statement as the default one.

Illegal variants (ehrsync must refuse them by name, never read them as a statement declaring nothing):

- ``bare_objects``: each one-element array (``rest``, ``operation``, ``interaction`` ...) as the bare object, as a
  naive XML-to-JSON converter writes it (FHIR JSON writes a repeating element as an array even with one item).
- ``not_an_object``: the statement wrapped in a JSON array.
- ``bare_common_param``: one common ``rest.searchParam`` (``_lastUpdated``) as the bare object: refused by the
  search-parameter reader only.
- ``bare_system_operation``: the one system ``rest.operation`` (export) as the bare object: refused by the Bulk-level
  reader only.
- ``bare_profile``: DocumentReference's one ``supportedProfile`` as a bare string: refused by the write gate only.
- ``other_type_slips``: Location's ``interaction`` and ``searchParam`` as one bare object each and its one
  ``supportedProfile`` as a bare string, Organization's ``searchParam`` as one bare object: refused by the readers
  of those types only (never by the write gate, nor by the search of another type).
- ``bare_note_params``: DocumentReference's ``searchParam`` as its first parameter's bare object: refused by the
  search-parameter reader of DocumentReference only (the write gate reads the type's interactions and profiles).
- ``listed_type``: DocumentReference's entry with its ``type`` as a one-item array (``["DocumentReference"]``), a
  string as another JSON kind: refused by the write gate by name (never read as a type declaring no create), never
  by the search of another type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["CapabilityVariant", "apply_variants"]

CapabilityVariant = Literal[
    "params_in_later_entry",
    "unprefixed_params",
    "common_params",
    "decorated",
    "no_system_export",
    "unread_slips",
    "bare_objects",
    "not_an_object",
    "bare_common_param",
    "bare_system_operation",
    "bare_profile",
    "other_type_slips",
    "listed_type",
    "bare_note_params",
]
_US_CORE_DOC = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"
_SP = "http://hl7.org/fhir/SearchParameter/Resource-"
_EXT = [{"url": "http://example.org/fhir/StructureDefinition/vendor-note", "valueString": "sandbox variant"}]


def apply_variants(body: dict[str, Any], variants: list[CapabilityVariant]) -> Any:
    """``body`` (the default statement, one server ``rest`` entry) as the ``variants`` write it, in order."""
    out: Any = body
    for variant in variants:
        out = _apply(out, variant)
    return out


def _apply(body: Any, variant: CapabilityVariant) -> Any:
    if variant == "not_an_object":
        return [body]
    if variant == "bare_objects":
        return _bare(body)
    server = next(r for r in body["rest"] if r.get("mode") == "server")
    if variant in _SLIPS:
        _SLIPS[variant](body, server)
    elif variant == "params_in_later_entry":
        later = [
            {"type": r["type"], "interaction": [{"code": "search-type"}], "searchParam": r.pop("searchParam")}
            for r in server["resource"]
            if r.get("searchParam")
        ]
        body["rest"].append({"mode": "server", "resource": later})
    elif variant == "unprefixed_params":
        for resource in server["resource"]:
            resource["searchParam"] = [_unprefixed(p) for p in resource.get("searchParam") or []]
    elif variant == "common_params":
        params = {p["name"]: p for r in server["resource"] for p in r.pop("searchParam", None) or []}
        server["searchParam"] = list(params.values())
    else:
        _decorate(body, server)
    return body


def _unread_slips(body: dict[str, Any], server: dict[str, Any]) -> None:
    for resource in server["resource"]:
        if len(resource.get("operation") or []) == 1:
            resource["operation"] = resource["operation"][0]
    body["implementation"] = [body.get("implementation") or {"description": "sandbox"}]
    body["messaging"] = {"documentation": "no messaging"}
    body["document"] = {"mode": "producer", "profile": "http://example.org/fhir/StructureDefinition/doc"}
    server["compartment"] = "http://hl7.org/fhir/CompartmentDefinition/patient"
    body["rest"].append({"mode": "client", "resource": {"type": "Patient", "interaction": {"code": "read"}}})


def _bare_profile(_body: dict[str, Any], server: dict[str, Any]) -> None:
    for resource in server["resource"]:
        if resource["type"] == "DocumentReference":
            resource["supportedProfile"] = _US_CORE_DOC


def _other_type_slips(_body: dict[str, Any], server: dict[str, Any]) -> None:
    for resource in server["resource"]:
        if resource["type"] == "Location":
            resource["interaction"] = {"code": "read"}
            resource["searchParam"] = {"name": "_lastUpdated", "type": "date"}
            resource["supportedProfile"] = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-location"
        if resource["type"] == "Organization":
            resource["searchParam"] = {"name": "_id", "type": "token"}


def _listed_type(_body: dict[str, Any], server: dict[str, Any]) -> None:
    for resource in server["resource"]:
        if resource["type"] == "DocumentReference":
            resource["type"] = ["DocumentReference"]


def _bare_note_params(_body: dict[str, Any], server: dict[str, Any]) -> None:
    for resource in server["resource"]:
        if resource["type"] == "DocumentReference" and resource.get("searchParam"):
            resource["searchParam"] = resource["searchParam"][0]


_SLIPS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "no_system_export": lambda _body, server: server.pop("operation", None),
    "unread_slips": _unread_slips,
    "bare_common_param": lambda _body, server: server.update(searchParam={"name": "_lastUpdated", "type": "date"}),
    "bare_system_operation": lambda _body, server: server.update(operation=server["operation"][0]),
    "bare_profile": _bare_profile,
    "other_type_slips": _other_type_slips,
    "listed_type": _listed_type,
    "bare_note_params": _bare_note_params,
}


def _unprefixed(param: dict[str, Any]) -> dict[str, Any]:
    name = str(param["name"])
    if not name.startswith("_"):
        return param
    return {**param, "name": name[1:], "definition": f"{_SP}{name[1:]}|4.0.1"}


def _decorate(body: dict[str, Any], server: dict[str, Any]) -> None:
    body.pop("software", None)
    body.pop("implementation", None)
    body.update(kind="capability", fhirVersion="4.0.0", format=["xml", "application/fhir+json"], extension=_EXT)
    body["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">sandbox</div>'}
    server["extension"] = _EXT
    server["documentation"] = "variant"
    for resource in server["resource"]:
        resource["extension"] = _EXT
        resource["versioning"] = "versioned"
        for entry in [*(resource.get("interaction") or []), *(resource.get("searchParam") or [])]:
            entry["extension"] = _EXT
    server["resource"].append({"type": "Basic", "profile": "http://hl7.org/fhir/StructureDefinition/Basic"})
    server["operation"] = [
        {"name": "bulk-data-export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export|2.0.0"}
    ]


def _bare(value: Any) -> Any:
    """Every one-element array written as its one item, at every depth."""
    if isinstance(value, list):
        items = [_bare(v) for v in value]
        return items[0] if len(items) == 1 and isinstance(items[0], dict) else items
    if isinstance(value, dict):
        return {k: _bare(v) for k, v in value.items()}
    return value
