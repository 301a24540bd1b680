"""BASELINE for ``bench/views.py``: the hand-written JSON-path extraction the analyst views used before they were
SQL-on-FHIR ViewDefinitions (``git show bb23eb4^:warehouse/views.py``), for the same columns, in the same order
and with the same SQL types as today's ``patient`` and ``observation`` views (columns added to a view since are
added here too, or the compiled/baseline ratio compares unequal work: ``tests/bench/test_views_bench_smoke.py``).

It is a yardstick, not a second implementation: it reads ``#>>`` / ``json_extract_string`` paths straight off the
stored JSON with no FHIRPath semantics (no multi-value check, no flattening of unexpected arrays), which is the
least work a view of these columns can do on each backend.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BASELINE_VIEWS", "baseline_sql"]

Path = tuple[str | int, ...]
_C0 = ("coding", 0)


@dataclass(frozen=True)
class Col:
    """One output column: the first present of ``paths`` as ``kind`` (text, num, int, bool, ref:<Type>), or for
    ``form`` the tag of the first present path (a choice element's ``[x]`` form: ``valueQuantity`` → ``Quantity``)."""

    kind: str
    paths: tuple[Path, ...]
    tags: tuple[str, ...] = ()


def _t(*paths: Path) -> Col:
    return Col("text", paths)


def _form(element: str, *tags: str) -> Col:
    """Which ``element[x]`` form is present, tested in ``tags`` order (``valueString`` is tag ``string``)."""
    return Col("form", tuple((element + t[0].upper() + t[1:],) for t in tags), tags)


_VALUE_FORMS = (
    "Quantity", "CodeableConcept", "string", "boolean", "integer", "Range", "Ratio", "SampledData", "time", "dateTime",
    "Period",
)  # fmt: skip
_OBS: dict[str, Col] = {
    "patient_id": Col("ref:Patient", (("subject", "reference"),)),
    "encounter_id": Col("ref:Encounter", (("encounter", "reference"),)),
    "status": _t(("status",)),
    "category": _t(("category", 0, *_C0, "code")),
    "code_system": _t(("code", *_C0, "system")),
    "code": _t(("code", *_C0, "code")),
    "code_display": _t(("code", *_C0, "display"), ("code", "text")),
    "value_quantity": Col("num", (("valueQuantity", "value"),)),
    "unit": _t(("valueQuantity", "unit"), ("valueQuantity", "code")),
    "value_string": _t(("valueString",), ("valueCodeableConcept", "text"), ("valueCodeableConcept", *_C0, "display")),
    "value_code": _t(("valueCodeableConcept", *_C0, "code")),
    "value_boolean": Col("bool", (("valueBoolean",),)),
    "value_integer": Col("int", (("valueInteger",),)),
    "value_type": _form("value", *_VALUE_FORMS),
    "value_comparator": _t(("valueQuantity", "comparator")),
    "value_range_low": Col("num", (("valueRange", "low", "value"),)),
    "value_range_high": Col("num", (("valueRange", "high", "value"),)),
    "value_date_time": _t(("valueDateTime",), ("valuePeriod", "start")),
    "effective": _t(("effectiveDateTime",), ("effectiveInstant",), ("effectivePeriod", "start")),
    "effective_end": _t(("effectivePeriod", "end")),
    "effective_type": _form("effective", "dateTime", "instant", "Period", "Timing"),
    "issued": _t(("issued",)),
    "reference_range_low": Col("num", (("referenceRange", 0, "low", "value"),)),
    "reference_range_high": Col("num", (("referenceRange", 0, "high", "value"),)),
    "interpretation": _t(("interpretation", 0, *_C0, "code")),
}
_PATIENT: dict[str, Col] = {
    "family": _t(("name", 0, "family")),
    "given": _t(("name", 0, "given", 0)),
    "gender": _t(("gender",)),
    "birth_date": _t(("birthDate",)),
    "deceased": Col("bool", (("deceasedBoolean",),)),
    "deceased_date_time": _t(("deceasedDateTime",)),
    "mrn": _t(("identifier", 0, "value")),
    "city": _t(("address", 0, "city")),
    "state": _t(("address", 0, "state")),
    "postal_code": _t(("address", 0, "postalCode")),
}
BASELINE_VIEWS: dict[str, tuple[str, dict[str, Col]]] = {
    "patient": ("Patient", _PATIENT),
    "observation": ("Observation", _OBS),
}
_PROVENANCE = ("connection_id", "tenant_id", "source", "version_id", "last_updated")


def _duck_path(path: Path) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _pg_path(path: Path) -> str:
    return "{" + ",".join(str(p) for p in path) + "}"


def _one(dialect: str, kind: str, path: Path) -> str:
    duck = dialect == "duckdb"
    text = f"json_extract_string(r.resource, '{_duck_path(path)}')" if duck else f"(r.resource #>> '{_pg_path(path)}')"
    if kind in ("text",) or kind.startswith("ref:"):
        return text
    jtype = (
        f"json_type(r.resource, '{_duck_path(path)}')" if duck else f"jsonb_typeof(r.resource #> '{_pg_path(path)}')"
    )
    if kind == "bool":
        want, sqltype = ("('BOOLEAN')", "BOOLEAN") if duck else ("('boolean')", "BOOLEAN")
    else:
        want = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')" if duck else "('number')"
        sqltype = "DOUBLE" if duck else "DOUBLE PRECISION"
    value = f"CASE WHEN {jtype} IN {want} THEN CAST({text} AS {sqltype}) END"
    return f"CAST({value} AS BIGINT)" if kind == "int" else value


def _present(dialect: str, path: Path) -> str:
    if dialect == "duckdb":
        return f"json_extract(r.resource, '{_duck_path(path)}') IS NOT NULL"
    return f"(r.resource #> '{_pg_path(path)}') IS NOT NULL"


def _column(dialect: str, col: Col) -> str:
    if col.kind == "form":
        whens = " ".join(f"WHEN {_present(dialect, p)} THEN '{t}'" for p, t in zip(col.paths, col.tags, strict=True))
        return f"CASE {whens} END"
    kind = "text" if col.kind.startswith("ref:") else col.kind
    options = [_one(dialect, kind, p) for p in col.paths]
    sql = options[0] if len(options) == 1 else f"COALESCE({', '.join(options)})"
    if not col.kind.startswith("ref:"):
        return sql
    target = col.kind[4:]
    if dialect == "duckdb":
        return f"NULLIF(regexp_extract({sql}, '(?:^|/){target}/([^/]+)(?:/_history/[^/]*)?$', 1), '')"
    return f"substring({sql} from '(?:^|/){target}/([^/]+)(?:/_history/[^/]*)?$')"


def baseline_sql(view: str, dialect: str) -> str:
    """The hand-written SELECT of ``view`` (``patient`` or ``observation``) on ``dialect`` (duckdb, postgres)."""
    resource_type, columns = BASELINE_VIEWS[view]
    cols = [f"r.{c}" for c in _PROVENANCE] + ["r.id"]
    cols += [f"{_column(dialect, col)} AS {name}" for name, col in columns.items()]
    return (
        f"SELECT {', '.join(cols)} FROM fhir_resources r "
        f"WHERE r.resource_type = '{resource_type}' AND r.deleted_at IS NULL"
    )
