"""Kick-off parameters from a GET query or a POST ``Parameters`` body (BDX-03..05)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from sandbox.data.ids import ALL_TYPES, patient_index_of_reference
from sandbox.data.timefmt import instant_of, parse_instant
from sandbox.fhir.query import SearchQuery, parse_query
from sandbox.fhir.responses import FhirFailure

Level = Literal["system", "patient", "group"]
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
_VALUE_KEYS = ("valueString", "valueInstant", "valueDateTime", "valueCode", "valueUri", "valueBoolean")


@dataclass
class ExportRequest:
    level: Level
    group_id: str | None
    types: list[str] | None = None
    since: str | None = None  # fixed-width instant
    type_filters: dict[str, list[SearchQuery]] = field(default_factory=dict)
    elements: list[str] | None = None
    patients: list[int] | None = None
    warnings: list[str] = field(default_factory=list)


def pairs_from_parameters(body: Any) -> list[tuple[str, str]]:
    """Flatten a FHIR ``Parameters`` resource into (name, value) pairs; references become their text."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirFailure(400, "structure", "POST $export needs a FHIR Parameters body")
    out: list[tuple[str, str]] = []
    for p in body.get("parameter", []):
        if not isinstance(p, dict) or "name" not in p:
            raise FhirFailure(400, "structure", "each Parameters.parameter needs a name")
        ref = p.get("valueReference")
        if isinstance(ref, dict):
            out.append((str(p["name"]), str(ref.get("reference", ""))))
            continue
        value = next((p[k] for k in _VALUE_KEYS if k in p), None)
        if value is None:
            raise FhirFailure(400, "structure", f"parameter {p['name']!r} has no supported value[x]")
        out.append((str(p["name"]), str(value).lower() if isinstance(value, bool) else str(value)))
    return out


def parse_export(
    level: Level, group_id: str | None, pairs: list[tuple[str, str]], lenient: bool, via_post: bool
) -> ExportRequest:
    """Validate kick-off parameters; unsupported ones are 400 unless lenient (then a warning, BDX-05)."""
    req = ExportRequest(level, group_id)

    def refuse(message: str) -> None:
        if not lenient:
            raise FhirFailure(400, "not-supported", message)
        req.warnings.append(message)

    for name, value in pairs:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise FhirFailure(400, "not-supported", f"_outputFormat {value!r} is not supported")
        elif name == "_since":
            try:
                req.since = instant_of(parse_instant(value))
            except ValueError:
                raise FhirFailure(400, "invalid", f"_since {value!r} is not a FHIR instant") from None
        elif name == "_type":
            for t in filter(None, (v.strip() for v in value.split(","))):
                if t in ALL_TYPES:
                    req.types = [*(req.types or []), t]
                else:
                    refuse(f"_type {t!r} is not supported")
        elif name == "_typeFilter":
            rtype, _, query = value.partition("?")
            if rtype not in ALL_TYPES or not query:
                refuse(f"_typeFilter {value!r} is not a Type?query")
                continue
            try:
                q = parse_query(rtype, parse_qsl(query), 1, 1, strict=True)
            except FhirFailure as exc:
                refuse(f"_typeFilter {value!r}: {exc.diagnostics}")
                continue
            req.type_filters.setdefault(rtype, []).append(q)
        elif name == "_elements":
            req.elements = [e.split(".", 1)[-1] for e in value.split(",") if e]
        elif name == "patient":
            if not via_post:
                raise FhirFailure(400, "not-supported", "patient is only accepted in a POST Parameters body")
            if level == "system":
                raise FhirFailure(400, "not-supported", "patient is not allowed at system level")
            index = patient_index_of_reference(value)
            if index is None:
                raise FhirFailure(400, "not-found", f"patient {value!r} is not known")
            req.patients = [*(req.patients or []), index]
        else:
            refuse(f"parameter {name!r} is not supported")
    return req
