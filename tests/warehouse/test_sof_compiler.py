"""warehouse.sof over the real warehouse table (fhir_resources as schema_ddl creates it) on DuckDB and PostgreSQL,
and the errors a ViewDefinition author sees. The official cases are in test_sof_conformance.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from warehouse._sql import DUCKDB, POSTGRES, Dialect, schema_ddl
from warehouse.sof import ViewDefinitionError, compile_view, load_view_definition

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "birthDate": "1980",
    "name": [{"use": "official", "family": "Smith", "given": ["Ann", "B"]}],
}
OBS = {
    "resourceType": "Observation",
    "id": "o1",
    "subject": {"reference": "https://ehr.example/fhir/Patient/p1/_history/2"},
    "valueQuantity": {"value": 1.5, "unit": "mg/dL"},
    "effectiveDateTime": "2024-05",
}
ROWS: list[tuple[str, str, dict[str, Any], bool]] = [  # (connection_id, tenant_id, resource, deleted)
    ("c1", "t1", PATIENT, False),
    ("c1", "t1", OBS, False),
    ("c2", "t1", {**OBS, "id": "gone"}, True),
]
OBS_VIEW: dict[str, Any] = {
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "obs_id", "path": "getResourceKey()", "type": "id"},
                {"name": "patient_id", "path": "subject.getReferenceKey(Patient)", "type": "id"},
                {"name": "other_ref", "path": "subject.getReferenceKey(Group)", "type": "id"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).unit", "type": "string"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                {"name": "high", "path": "iif(value.ofType(Quantity).value > 1, 'high', 'normal')", "type": "string"},
            ]
        }
    ],
}
PATIENT_VIEW: dict[str, Any] = {
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id", "type": "id"},
                {"name": "birth_date", "path": "birthDate", "type": "date"},
                {"name": "given_count", "path": "name.given.count()", "type": "integer"},
                {"name": "smith", "path": "name.family.first().startsWith('Sm')", "type": "boolean"},
            ]
        }
    ],
}
MANY_VIEW = {"resource": "Patient", "select": [{"column": [{"name": "given", "path": "name.given", "type": "string"}]}]}


def _insert_sql(d: Dialect) -> str:
    ph = "?" if d is DUCKDB else "%s"
    return (
        "INSERT INTO fhir_resources (connection_id, resource_type, id, tenant_id, resource, landed_at, deleted_at) "
        f"VALUES ({ph}, {ph}, {ph}, {ph}, CAST({ph} AS {d.json}), now(), CASE WHEN {ph} THEN now() END)"
    )


def _params() -> list[tuple[Any, ...]]:
    return [(c, r["resourceType"], r["id"], t, json.dumps(r), deleted) for c, t, r, deleted in ROWS]


@pytest.fixture(params=["duckdb", "postgres"])
def run(request: pytest.FixtureRequest) -> Iterator[tuple[Dialect, Any]]:
    """(dialect, run(sql) -> list of row dicts) over a fhir_resources table holding ROWS."""
    if request.param == "duckdb":
        con = duckdb.connect()
        for ddl in schema_ddl(DUCKDB):
            con.execute(ddl)
        con.executemany(_insert_sql(DUCKDB), _params())

        def duck(sql: str) -> list[dict[str, Any]]:
            cur = con.execute(sql)
            return [dict(zip([d[0] for d in cur.description], row, strict=True)) for row in cur.fetchall()]

        yield DUCKDB, duck
        con.close()
        return
    url = request.getfixturevalue("postgres_url").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as pg:
        for ddl in schema_ddl(POSTGRES):
            pg.execute(ddl)
        pg.cursor().executemany(_insert_sql(POSTGRES), _params())

        def post(sql: str) -> list[dict[str, Any]]:
            cur = pg.execute(sql)
            return [dict(zip([d.name for d in cur.description or ()], row, strict=True)) for row in cur.fetchall()]

        yield POSTGRES, post


def test_live_rows_of_the_type_with_provenance_first(run: tuple[Dialect, Any]) -> None:
    dialect, execute = run
    compiled = compile_view(load_view_definition(OBS_VIEW), dialect, extra_columns=("connection_id", "tenant_id"))
    rows = execute(compiled.sql)
    assert list(rows[0]) == ["connection_id", "tenant_id", "obs_id", "patient_id", "other_ref", "value", "unit",
                             "effective", "high"]  # fmt: skip
    assert rows == [
        {
            "connection_id": "c1",
            "tenant_id": "t1",
            "obs_id": "o1",
            "patient_id": "p1",
            "other_ref": None,
            "value": 1.5,
            "unit": "mg/dL",
            "effective": "2024-05",
            "high": "high",
        }
    ]
    assert compiled.columns[0] == ("obs_id", "id") and compiled.name == "observation"


def test_partial_dates_stay_text_and_functions(run: tuple[Dialect, Any]) -> None:
    dialect, execute = run
    rows = execute(compile_view(load_view_definition(PATIENT_VIEW), dialect).sql)
    assert rows == [{"id": "p1", "birth_date": "1980", "given_count": 2, "smith": True}]


def test_several_values_without_collection_raise_naming_the_column(run: tuple[Dialect, Any]) -> None:
    dialect, execute = run
    with pytest.raises((duckdb.Error, psycopg.Error), match="column 'given' yields more than one value"):
        execute(compile_view(load_view_definition(MANY_VIEW), dialect).sql)


def _view(**changes: Any) -> dict[str, Any]:
    return {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}], **changes}


@pytest.mark.parametrize(
    ("view", "path", "problem"),
    [
        (_view(resource="patient"), "$.resource", "not a FHIR resource type"),
        (_view(select=[{"column": [{"name": "x", "path": "name.("}]}]), "$.select[0].column[0].path", "FHIRPath"),
        (_view(select=[{"column": [{"name": "x", "path": "name.foo()"}]}]), "$.select[0].column[0].path", "foo()"),
        (_view(select=[{"column": [{"name": "1x", "path": "id"}]}]), "$.select[0].column[0].name", "must match"),
        (_view(select=[{"forEach": "name"}]), "$.select[0]", "at least one of column"),
        (_view(where=[{"path": "%nope = 1"}]), "$.where[0].path", "undefined constant %nope"),
        (_view(where=[{"path": "'text'"}]), "$.where[0].path", "must evaluate to a boolean"),
        (_view(select=[{"repeat": []}]), "$.select[0].repeat", "at least one path"),
        (_view(select=[{"column": [{"name": "v", "path": "value.ofType(Nope)"}]}]), "$.select[0].column[0]", "Nope"),
    ],
)
def test_errors_name_the_problem_and_its_json_path(view: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(ViewDefinitionError) as caught:
        compile_view(load_view_definition(view), DUCKDB)
    assert caught.value.path.startswith(path) and problem in caught.value.problem


def test_pass_through_columns_may_not_clash_and_must_be_identifiers() -> None:
    view = load_view_definition(_view())
    with pytest.raises(ViewDefinitionError, match="clash"):
        compile_view(view, POSTGRES, extra_columns=("id",))
    with pytest.raises(ViewDefinitionError, match="identifier"):
        compile_view(view, POSTGRES, source="fhir_resources; DROP TABLE x")


def test_load_from_a_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "patient.json"
    good.write_text(json.dumps({**PATIENT_VIEW, "name": "patient_flat"}))
    assert load_view_definition(good).name == "patient_flat"
    with pytest.raises(ViewDefinitionError, match="cannot read"):
        load_view_definition(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ViewDefinitionError, match="not valid JSON"):
        load_view_definition(bad)
