"""The single-path fast path of warehouse.sof (warehouse/sof/_fast.py) gives FHIRPath's answer on data of the
expected shape and on data of another shape alike (a lone object where FHIR has an array, an array where it has
one value): the lookup serves the first, the guarded general SQL the second. On DuckDB and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import psycopg
import pytest

from warehouse._sql import DUCKDB, POSTGRES, Dialect, schema_ddl
from warehouse.sof import compile_view, load_view_definition

RESOURCES: list[dict[str, Any]] = [
    {  # the shape FHIR defines
        "id": "plain",
        "status": "final",
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"code": "a"}, {"code": "b", "display": "B"}], "text": "Text"},
        "valueQuantity": {"value": 2},
    },
    {  # lone objects where FHIR has arrays: first() of one object is that object
        "id": "lone",
        "category": {"coding": {"code": "lab"}},
        "code": {"coding": {"code": "x", "display": "X"}},
    },
    {  # arrays where FHIR has one value: navigation flattens them
        "id": "arrays",
        "status": ["amended"],
        "code": [{"coding": [{"code": "c1"}]}, {"coding": [{"code": "c2", "display": "C2"}]}],
        "valueQuantity": [{"value": 7.5}],
    },
]
VIEW: dict[str, Any] = {
    "resource": "Observation",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "id"},
                {"name": "status", "path": "status", "type": "code"},
                {"name": "category", "path": "category.first().coding.first().code", "type": "code"},
                {"name": "code", "path": "code.coding.first().code", "type": "code"},
                {"name": "display", "path": "(code.coding.first().display | code.text).first()", "type": "string"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "has_value", "path": "value.ofType(Quantity).exists()", "type": "boolean"},
                {"name": "has_code", "path": "code.coding.first().exists()", "type": "boolean"},
            ]
        }
    ],
}
EXPECTED = [
    {"id": "arrays", "status": "amended", "category": None, "code": "c1", "display": None, "value": 7.5}
    | {"has_value": True, "has_code": True},
    {"id": "lone", "status": None, "category": "lab", "code": "x", "display": "X", "value": None}
    | {"has_value": False, "has_code": True},
    {"id": "plain", "status": "final", "category": "vital-signs", "code": "a", "display": "Text", "value": 2.0}
    | {"has_value": True, "has_code": True},
]


def _insert(d: Dialect) -> str:
    ph = "?" if d is DUCKDB else "%s"
    return (
        "INSERT INTO fhir_resources (connection_id, resource_type, id, tenant_id, resource, landed_at) "
        f"VALUES ('c1', 'Observation', {ph}, 't1', CAST({ph} AS {d.json}), now())"
    )


def _rows() -> list[tuple[str, str]]:
    return [(r["id"], json.dumps({"resourceType": "Observation", **r})) for r in RESOURCES]


@pytest.fixture(params=["duckdb", "postgres"])
def run(request: pytest.FixtureRequest) -> Iterator[tuple[Dialect, Any]]:
    """(dialect, run(sql) -> rows as dicts) over fhir_resources holding RESOURCES."""
    if request.param == "duckdb":
        con = duckdb.connect()
        for ddl in schema_ddl(DUCKDB):
            con.execute(ddl)
        con.executemany(_insert(DUCKDB), _rows())

        def duck(sql: str) -> list[dict[str, Any]]:
            cur = con.execute(sql)
            return [dict(zip([c[0] for c in cur.description], row, strict=True)) for row in cur.fetchall()]

        yield DUCKDB, duck
        con.close()
        return
    url = request.getfixturevalue("postgres_url").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as pg:
        for ddl in schema_ddl(POSTGRES):
            pg.execute(ddl)
        pg.cursor().executemany(_insert(POSTGRES), _rows())

        def post(sql: str) -> list[dict[str, Any]]:
            cur = pg.execute(sql)
            return [dict(zip([c.name for c in cur.description or ()], row, strict=True)) for row in cur.fetchall()]

        yield POSTGRES, post


def test_every_shape_gives_the_fhirpath_answer(run: tuple[Dialect, Any]) -> None:
    dialect, execute = run
    compiled = compile_view(load_view_definition(VIEW), dialect)
    assert execute(f"SELECT * FROM ({compiled.sql}) v ORDER BY id") == EXPECTED


@pytest.mark.parametrize("dialect", [DUCKDB, POSTGRES], ids=["duckdb", "postgres"])
def test_single_paths_compile_to_one_lookup(dialect: Dialect) -> None:
    """The lookups are there (and on DuckDB read from one json_extract of the resource per row)."""
    sql = compile_view(load_view_definition(VIEW), dialect).sql
    if dialect is DUCKDB:
        assert 'json_extract("resource", [\'$."status"\'' in sql and 'r."_sof_lookups"[' in sql
    else:
        assert '(r."resource" #> \'{"code","coding",0,"code"}\')' in sql
