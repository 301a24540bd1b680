"""Search parameters: parsing into a query and matching resources (shared by search and bulk _typeFilter)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sandbox.data.ids import COMPARTMENT_TYPES, patient_index_of_reference
from sandbox.data.timefmt import instant_of, parse_instant
from sandbox.fhir.responses import FhirFailure

CONTROL = frozenset({"_count", "_sort", "_elements", "_format", "_cursor", "_total", "_summary"})
FILTERS = frozenset({"_id", "_lastUpdated", "patient", "subject", "category", "status", "code", "identifier"})
#: DocumentReference's own parameters (DWB-32): applied when declared (``SandboxConfig.ignored_params``)
DOCUMENT_FILTERS = frozenset({"type", "date", "encounter"})
_OPS = ("gt", "ge", "lt", "le", "eq")


@dataclass
class SearchQuery:
    resource_type: str
    patients: list[int] | None = None
    ids: set[str] | None = None
    last_updated: list[tuple[str, str]] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    statuses: list[list[str]] = field(default_factory=list)
    codes: list[list[str]] = field(default_factory=list)
    identifiers: list[list[str]] = field(default_factory=list)
    types: list[list[str]] = field(default_factory=list)
    encounters: list[list[str]] = field(default_factory=list)
    dates: list[tuple[str, str]] = field(default_factory=list)
    sort: str | None = None
    elements: list[str] | None = None
    count: int = 50


def _bounds(op: str, value: str, name: str = "_lastUpdated") -> list[tuple[str, str]]:
    """``_lastUpdated`` (or ``date``) as comparisons on fixed-width instants; dates without time cover their whole
    day, a time in whole seconds its whole second."""
    try:
        start = parse_instant(value)
    except ValueError:
        raise FhirFailure(400, "invalid", f"{name} value {value!r} is not a FHIR date/instant") from None
    has_time = "T" in value
    whole = "." not in value and name == "date"
    end = start + (timedelta(days=1) if not has_time else timedelta(seconds=1) if whole else timedelta(milliseconds=1))
    lo, hi = instant_of(start), instant_of(end)
    if op == "gt":
        return [(">=", hi)] if not has_time else [(">", lo)]
    if op == "ge":
        return [(">=", lo)]
    if op == "lt":
        return [("<", lo)]
    if op == "le":
        return [("<", hi)]
    return [(">=", lo), ("<", hi)]


def _patient_ref(value: str) -> int:
    index = patient_index_of_reference(value)
    if index is None:
        raise FhirFailure(404, "not-found", "no such patient")
    return index


def split_ignored(
    params: Sequence[tuple[str, str]],
    ignored_names: Collection[str],
    strict: bool = False,
    refused_names: Collection[str] = (),
) -> tuple[list[tuple[str, str]], list[str]]:
    """The parameters a search applies, and the names of those it ignores (unknown ones and ``ignored_names``, as a
    server lacking those search parameters does); ``strict`` handling refuses an ignored one (400) instead, and
    ``refused_names`` are refused (400) whatever the handling."""
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    for name, value in params:
        base = name.split(":", 1)[0]
        if base in refused_names:
            raise FhirFailure(400, "not-supported", f"search parameter {base!r} is not supported for this resource")
        if base in ignored_names or base not in FILTERS | DOCUMENT_FILTERS | CONTROL:
            if strict:
                raise FhirFailure(400, "not-supported", f"search parameter {base!r} is not supported")
            ignored.append(base)
        else:
            used.append((name, value))
    return used, ignored


def check_required(resource_type: str, params: Sequence[tuple[str, str]], required: list[list[str]]) -> None:
    """400 ``required`` unless the search carries one of the ``required`` parameter sets (or searches by ``_id``), as
    vendors refuse a search lacking what they need for the type (Epic's Observation category, Oracle's CarePlan)."""
    names = {name.split(":", 1)[0] for name, _ in params}
    if not required or "_id" in names or any(set(one) <= names for one in required):
        return
    wanted = " or ".join("+".join(one) for one in required)
    raise FhirFailure(400, "required", f"a {resource_type} search needs {wanted}")


def parse_query(
    resource_type: str, params: Sequence[tuple[str, str]], default_count: int, max_count: int, strict: bool = False
) -> SearchQuery:
    """Build a query; unknown parameters are ignored (FHIR default) unless ``strict`` (then 400)."""
    q = SearchQuery(resource_type, count=default_count)
    for name, value in params:
        base = name.split(":", 1)[0]
        if base in ("patient", "subject"):
            if resource_type not in COMPARTMENT_TYPES or resource_type == "Patient":
                raise FhirFailure(400, "not-supported", f"{resource_type} has no {base} search parameter")
            wanted = [_patient_ref(v) for v in value.split(",")]
            q.patients = wanted if q.patients is None else [p for p in q.patients if p in wanted]
        elif base == "_id":
            ids = set(value.split(","))
            q.ids = ids if q.ids is None else q.ids & ids
        elif base == "_lastUpdated":
            op = value[:2] if value[:2] in _OPS else "eq"
            q.last_updated.extend(_bounds(op, value[2:] if value[:2] in _OPS else value))
        elif base == "category":
            q.categories.append(value.split(","))
        elif base == "status":
            q.statuses.append(value.split(","))
        elif base == "code":
            q.codes.append(value.split(","))
        elif base == "identifier":
            q.identifiers.append(value.split(","))
        elif base == "type":
            q.types.append(value.split(","))
        elif base == "encounter":
            q.encounters.append([v.rsplit("/", 1)[-1] for v in value.split(",")])
        elif base == "date":
            op = value[:2] if value[:2] in _OPS else "eq"
            q.dates.extend(_bounds(op, value[2:] if value[:2] in _OPS else value, "date"))
        elif base == "_count":
            if not value.isdigit():
                raise FhirFailure(400, "invalid", "_count must be a non-negative integer")
            q.count = max(1, min(int(value), max_count))
        elif base == "_sort":
            if value.lstrip("-") != "_lastUpdated":
                raise FhirFailure(400, "not-supported", "only _sort=_lastUpdated is supported")
            q.sort = value
        elif base == "_elements":
            q.elements = [e for e in value.split(",") if e]
        elif base not in CONTROL and strict:
            raise FhirFailure(400, "not-supported", f"search parameter {base!r} is not supported")
    return q


def _token_match(tokens: list[str], concepts: Any) -> bool:
    if isinstance(concepts, dict):
        concepts = [concepts]
    codings = [c for cc in concepts or [] if isinstance(cc, dict) for c in cc.get("coding", [])]
    for token in tokens:
        system, bar, code = token.rpartition("|")
        if any(c.get("code") == code and (not bar or c.get("system") == system) for c in codings):
            return True
    return False


def matches(q: SearchQuery, r: dict[str, Any]) -> bool:
    if q.ids is not None and r.get("id") not in q.ids:
        return False
    if q.last_updated:
        lu = r.get("meta", {}).get("lastUpdated", "")
        for op, bound in q.last_updated:
            if (op == ">" and not lu > bound) or (op == ">=" and not lu >= bound) or (op == "<" and not lu < bound):
                return False
    if any(not _token_match(toks, r.get("category")) for toks in q.categories):
        return False
    if any(r.get("status") not in toks for toks in q.statuses):
        return False
    code = r.get("code", r.get("vaccineCode"))
    if not all(_token_match(toks, code) for toks in q.codes):
        return False
    if not _document_match(q, r):
        return False
    if q.identifiers:
        idents = [i for i in [*r.get("identifier", []), r.get("masterIdentifier")] if isinstance(i, dict)]
        concepts = [{"coding": [{"system": i.get("system"), "code": i.get("value")} for i in idents]}]
        return all(_token_match(toks, concepts) for toks in q.identifiers)
    return True


def _document_match(q: SearchQuery, r: dict[str, Any]) -> bool:
    """``type``, ``encounter`` (``context.encounter``) and ``date`` (``DocumentReference.date``, as an instant)."""
    if not all(_token_match(toks, r.get("type")) for toks in q.types):
        return False
    context: dict[str, Any] = r["context"] if isinstance(r.get("context"), dict) else {}
    refs = [
        str(e.get("reference", "")).rsplit("/", 1)[-1] for e in context.get("encounter") or [] if isinstance(e, dict)
    ]
    if any(not set(ids) & set(refs) for ids in q.encounters):
        return False
    if not q.dates:
        return True
    try:
        when = instant_of(parse_instant(str(r.get("date"))))
    except ValueError:
        return False
    return all((op == ">" and when > b) or (op == ">=" and when >= b) or (op == "<" and when < b) for op, b in q.dates)


def subset(r: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    """``_elements``: keep the mandatory id/meta plus the named elements, tagged SUBSETTED."""
    out = {k: v for k, v in r.items() if k in ("resourceType", "id") or k in elements}
    meta = dict(r.get("meta", {}))
    meta["tag"] = [
        *meta.get("tag", []),
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"},
    ]
    out["meta"] = meta
    return out


def without_last_updated(r: dict[str, Any]) -> dict[str, Any]:
    """The resource as a server that never sends ``meta.lastUpdated`` serves it (``omit_last_updated``)."""
    meta = r.get("meta")
    if not isinstance(meta, dict) or "lastUpdated" not in meta:
        return r
    out = {k: v for k, v in r.items() if k != "meta"}
    rest = {k: v for k, v in meta.items() if k != "lastUpdated"}
    if rest:
        out["meta"] = rest
    return out
