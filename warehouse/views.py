"""Analyst views over ``fhir_resources`` (live rows only): SQL-on-FHIR v2 ViewDefinitions, compiled per dialect.

The tables are defined in ``warehouse/viewdefs/*.json`` (package data), one ViewDefinition per file named after
its view, so a definition can be read, shared and checked against other SQL-on-FHIR runners without reading
Python. Every view also carries the row's provenance (connection, tenant, the URL it was landed from, version
and ``lastUpdated``) from the ``fhir_resources`` columns. What the spec cannot say is plain SQL here:
``document_reference`` joins the stored attachment, ``patient_link`` and ``patient_person`` link patients of
different connections whose identifiers match.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from warehouse._sql import Dialect
from warehouse.errors import WarehouseError
from warehouse.sof import CompiledView, ViewDefinitionError, compile_view, load_view_definition

__all__ = [
    "LINK_VIEW_NAMES",
    "PROVENANCE_COLUMNS",
    "VIEWDEF_DIR",
    "VIEW_NAMES",
    "ViewDefinitionFileError",
    "view_definition_names",
    "view_statements",
]

VIEWDEF_DIR = Path(__file__).parent / "viewdefs"
# fhir_resources columns every view carries. ``source`` is the file or search URL a row was landed from (it names
# the EHR's FHIR base); the EHR vendor of a connection lives in the app database, not in the warehouse.
PROVENANCE_COLUMNS = ("connection_id", "tenant_id", "source", "version_id", "last_updated")

# patient rows of different connections of one tenant that share an identifier (system and value), both ways
_PATIENT_LINK = """SELECT a.tenant_id, a.connection_id, a.id AS patient_id,
    b.connection_id AS linked_connection_id, b.id AS linked_patient_id,
    a.system AS identifier_system, a.value AS identifier_value
  FROM patient_identifier a JOIN patient_identifier b
    ON a.system = b.system AND a.value = b.value AND a.tenant_id IS NOT DISTINCT FROM b.tenant_id
   AND a.connection_id <> b.connection_id"""

# every patient row with person_key: the smallest 'connection_id/patient_id' reachable through patient_link
# (computed once: inlined, PostgreSQL re-planned the identifier self-join into every recursion step)
_PATIENT_PERSON = """WITH RECURSIVE links AS MATERIALIZED (SELECT * FROM patient_link),
  reach (tenant_id, connection_id, patient_id, person_key) AS (
    SELECT tenant_id, connection_id, id, connection_id || '/' || id FROM patient
    UNION
    SELECT l.tenant_id, l.linked_connection_id, l.linked_patient_id, r.person_key
      FROM reach r JOIN links l ON l.connection_id = r.connection_id AND l.patient_id = r.patient_id)
  SELECT tenant_id, connection_id, patient_id, min(person_key) AS person_key
    FROM reach GROUP BY tenant_id, connection_id, patient_id"""

LINK_VIEW_NAMES = ("patient_link", "patient_person")
_LINK_SQL = {"patient_link": _PATIENT_LINK, "patient_person": _PATIENT_PERSON}


class ViewDefinitionFileError(WarehouseError):
    """A file in ``warehouse/viewdefs`` is not a ViewDefinition this warehouse can compile."""


def view_definition_names() -> tuple[str, ...]:
    """The ViewDefinition files' view names, sorted (each file is ``<name>.json``)."""
    return tuple(sorted(p.stem for p in VIEWDEF_DIR.glob("*.json")))


VIEW_NAMES: tuple[str, ...] = (*view_definition_names(), *LINK_VIEW_NAMES)


@cache
def _compiled(path: Path, dialect: Dialect) -> CompiledView:
    try:
        view = load_view_definition(path)
        compiled = compile_view(view, dialect, extra_columns=PROVENANCE_COLUMNS)
    except ViewDefinitionError as exc:
        raise ViewDefinitionFileError(f"{path.name}: {exc}") from exc
    if compiled.name != path.stem:
        raise ViewDefinitionFileError(
            f"{path.name}: the ViewDefinition's name is {compiled.name!r}, not {path.stem!r} (the file's name)"
        )
    return compiled


def _select(name: str, dialect: Dialect) -> str:
    sql = _compiled(VIEWDEF_DIR / f"{name}.json", dialect).sql
    if name != "document_reference":
        return sql
    return (  # the file the attachment URL resolved to, when it was downloaded
        "SELECT d.*, a.sha256 AS attachment_sha256, a.size AS attachment_size "
        f"FROM ({sql}) d LEFT JOIN fhir_attachments a "
        "ON a.connection_id = d.connection_id AND a.url = d.attachment_url"
    )


def view_statements(d: Dialect) -> list[str]:
    """``CREATE VIEW`` statements in ``VIEW_NAMES`` order (a view comes after the views it reads); the caller
    drops the old views first, in reverse order."""
    stmts = [f'CREATE VIEW "{name}" AS {_select(name, d)}' for name in view_definition_names()]
    stmts += [f'CREATE VIEW "{name}" AS {_LINK_SQL[name]}' for name in LINK_VIEW_NAMES]
    return stmts
