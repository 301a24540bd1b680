"""Analyst views over ``fhir_resources`` (live rows only), one per common resource type.

Columns are extracted from the stored JSON per dialect. Every extraction tolerates absent fields and the
polymorphic ``[x]`` elements (``effectiveDateTime`` vs ``effectivePeriod.start`` ...) by returning NULL or the
first present alternative; FHIR dates stay ISO text because partial dates (``1980``, ``1980-04``) are legal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from warehouse._sql import Dialect

__all__ = ["VIEW_NAMES", "view_statements"]

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Text:
    path: Path


@dataclass(frozen=True)
class Num:
    path: Path


@dataclass(frozen=True)
class First:
    options: tuple[Text, ...]


@dataclass(frozen=True)
class RefId:
    """The id part of a reference such as ``Patient/123`` or ``https://ehr/fhir/Patient/123/_history/2``."""

    path: Path
    target: str


Expr = Text | Num | First | RefId


def _t(*path: str | int) -> Text:
    return Text(path)


def _first(*paths: Path) -> First:
    return First(tuple(Text(p) for p in paths))


_CODING0 = ("coding", 0)


def _coded(concept: Path, code: str, display: str) -> dict[str, Expr]:
    """Two columns of a CodeableConcept: its first coding's code, and that coding's display (else its text)."""
    return {
        code: Text((*concept, *_CODING0, "code")),
        display: _first((*concept, *_CODING0, "display"), (*concept, "text")),
    }


_CODE = _coded(("code",), "code", "code_display")
_SUBJECT = RefId(("subject", "reference"), "Patient")
_PATIENT = RefId(("patient", "reference"), "Patient")
_ENCOUNTER = RefId(("encounter", "reference"), "Encounter")

_VIEWS: dict[str, dict[str, Expr]] = {
    "patient": {
        "family": _t("name", 0, "family"),
        "given": _t("name", 0, "given", 0),
        "gender": _t("gender"),
        "birth_date": _t("birthDate"),
        "deceased": _first(("deceasedDateTime",), ("deceasedBoolean",)),
        "mrn": _t("identifier", 0, "value"),
        "city": _t("address", 0, "city"),
        "state": _t("address", 0, "state"),
        "postal_code": _t("address", 0, "postalCode"),
    },
    "observation": {
        "patient_id": _SUBJECT,
        "encounter_id": _ENCOUNTER,
        "status": _t("status"),
        "category": _t("category", 0, *_CODING0, "code"),
        "code_system": _t("code", *_CODING0, "system"),
        **_CODE,
        "value_quantity": Num(("valueQuantity", "value")),
        "unit": _first(("valueQuantity", "unit"), ("valueQuantity", "code")),
        "value_string": _first(
            ("valueString",),
            ("valueCodeableConcept", "text"),
            ("valueCodeableConcept", *_CODING0, "display"),
            ("valueCodeableConcept", *_CODING0, "code"),
            ("valueBoolean",),
            ("valueInteger",),
            ("valueDateTime",),
        ),
        "effective": _first(("effectiveDateTime",), ("effectiveInstant",), ("effectivePeriod", "start")),
        "issued": _t("issued"),
    },
    "encounter": {
        "patient_id": _SUBJECT,
        "status": _t("status"),
        "class_code": _first(("class", "code"), ("class", 0, *_CODING0, "code")),
        **_coded(("type", 0), "type_code", "type_display"),
        "period_start": _t("period", "start"),
        "period_end": _t("period", "end"),
    },
    "condition": {
        "patient_id": _SUBJECT,
        "encounter_id": _ENCOUNTER,
        "clinical_status": _t("clinicalStatus", *_CODING0, "code"),
        "verification_status": _t("verificationStatus", *_CODING0, "code"),
        "category": _t("category", 0, *_CODING0, "code"),
        **_CODE,
        "onset": _first(("onsetDateTime",), ("onsetPeriod", "start"), ("onsetString",)),
        "abatement": _first(("abatementDateTime",), ("abatementPeriod", "start"), ("abatementString",)),
        "recorded_date": _t("recordedDate"),
    },
    "medication_request": {
        "patient_id": _SUBJECT,
        "encounter_id": _ENCOUNTER,
        "status": _t("status"),
        "intent": _t("intent"),
        "medication_code": _t("medicationCodeableConcept", *_CODING0, "code"),
        "medication_display": _first(
            ("medicationCodeableConcept", *_CODING0, "display"),
            ("medicationCodeableConcept", "text"),
            ("medicationReference", "display"),
        ),
        "medication_reference": _t("medicationReference", "reference"),
        "authored_on": _t("authoredOn"),
        "dosage_text": _t("dosageInstruction", 0, "text"),
    },
    "allergy_intolerance": {
        "patient_id": _PATIENT,
        "clinical_status": _t("clinicalStatus", *_CODING0, "code"),
        "verification_status": _t("verificationStatus", *_CODING0, "code"),
        "category": _t("category", 0),
        "criticality": _t("criticality"),
        **_CODE,
        "recorded_date": _t("recordedDate"),
    },
    "immunization": {
        "patient_id": _PATIENT,
        "status": _t("status"),
        **_coded(("vaccineCode",), "vaccine_code", "vaccine_display"),
        "occurrence": _first(("occurrenceDateTime",), ("occurrenceString",)),
        "lot_number": _t("lotNumber"),
    },
    "procedure": {
        "patient_id": _SUBJECT,
        "encounter_id": _ENCOUNTER,
        "status": _t("status"),
        **_CODE,
        "performed": _first(("performedDateTime",), ("performedPeriod", "start"), ("performedString",)),
    },
    "diagnostic_report": {
        "patient_id": _SUBJECT,
        "encounter_id": _ENCOUNTER,
        "status": _t("status"),
        "category": _t("category", 0, *_CODING0, "code"),
        **_CODE,
        "effective": _first(("effectiveDateTime",), ("effectivePeriod", "start")),
        "issued": _t("issued"),
        "conclusion": _t("conclusion"),
    },
    "care_plan": {
        "patient_id": _SUBJECT,
        "status": _t("status"),
        "intent": _t("intent"),
        "category": _t("category", 0, *_CODING0, "code"),
        "title": _t("title"),
        "period_start": _t("period", "start"),
        "period_end": _t("period", "end"),
    },
    "document_reference": {
        "patient_id": _SUBJECT,
        "status": _t("status"),
        "doc_status": _t("docStatus"),
        **_coded(("type",), "type_code", "type_display"),
        "date": _t("date"),
        "description": _t("description"),
        "attachment_content_type": _t("content", 0, "attachment", "contentType"),
        "attachment_url": _t("content", 0, "attachment", "url"),
        "attachment_title": _t("content", 0, "attachment", "title"),
    },
}
_RESOURCE_TYPES = {
    "patient": "Patient",
    "observation": "Observation",
    "encounter": "Encounter",
    "condition": "Condition",
    "medication_request": "MedicationRequest",
    "allergy_intolerance": "AllergyIntolerance",
    "immunization": "Immunization",
    "procedure": "Procedure",
    "diagnostic_report": "DiagnosticReport",
    "care_plan": "CarePlan",
    "document_reference": "DocumentReference",
}
VIEW_NAMES: tuple[str, ...] = tuple(_VIEWS)


def _render(d: Dialect, e: Expr) -> str:
    if isinstance(e, Text):
        if d.name == "duckdb":
            return f"json_extract_string(r.resource, '{_duck_path(e.path)}')"
        return f"(r.resource #>> '{_pg_path(e.path)}')"
    if isinstance(e, Num):
        if d.name == "duckdb":
            p = _duck_path(e.path)
            return (
                f"CASE WHEN json_type(r.resource, '{p}') IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT') "
                f"THEN CAST(json_extract_string(r.resource, '{p}') AS DOUBLE) END"
            )
        p = _pg_path(e.path)
        return (
            f"CASE WHEN jsonb_typeof(r.resource #> '{p}') = 'number' "
            f"THEN CAST(r.resource #>> '{p}' AS DOUBLE PRECISION) END"
        )
    if isinstance(e, First):
        return f"COALESCE({', '.join(_render(d, o) for o in e.options)})"
    ref = _render(d, Text(e.path))
    pattern = f"(^|/){e.target}/([^/]+)"
    if d.name == "duckdb":
        return f"NULLIF(regexp_extract({ref}, '{pattern}', 2), '')"
    return f"substring({ref} from '(?:^|/){e.target}/([^/]+)')"


def _duck_path(path: Sequence[str | int]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _pg_path(path: Sequence[str | int]) -> str:
    return "{" + ",".join(str(p) for p in path) + "}"


def view_statements(d: Dialect) -> list[str]:
    """``CREATE VIEW`` statements (the caller drops old views first) including ``document_reference``'s join
    to ``fhir_attachments`` for the stored content's sha256."""
    stmts: list[str] = []
    for view, columns in _VIEWS.items():
        cols = [
            "r.id",
            "r.connection_id",
            "r.tenant_id",
            "r.version_id",
            "r.last_updated",
            *(f"{_render(d, e)} AS {name}" for name, e in columns.items()),
        ]
        joins = ""
        if view == "document_reference":
            url = _render(d, _VIEWS[view]["attachment_url"])
            cols += ["a.sha256 AS attachment_sha256", "a.size AS attachment_size"]
            joins = f" LEFT JOIN fhir_attachments a ON a.connection_id = r.connection_id AND a.url = {url}"
        stmts.append(
            f'CREATE VIEW "{view}" AS SELECT {", ".join(cols)} FROM fhir_resources r{joins} '
            f"WHERE r.resource_type = '{_RESOURCE_TYPES[view]}' AND r.deleted_at IS NULL"
        )
    return stmts
