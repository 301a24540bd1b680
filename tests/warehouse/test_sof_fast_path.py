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
        "flags": [False, True],  # the iif criteria below: a collection whose first item is false
    },
    {  # lone objects where FHIR has arrays: first() of one object is that object
        "id": "lone",
        "category": {"coding": {"code": "lab"}},
        "code": {"coding": {"code": "x", "display": "X"}},
        "flags": True,
    },
    {  # arrays where FHIR has one value: navigation flattens them
        "id": "arrays",
        "status": ["amended"],
        "code": [{"coding": [{"code": "c1"}]}, {"coding": [{"code": "c2", "display": "C2"}]}],
        "valueQuantity": [{"value": 7.5}],
        "flags": "yes",  # not a boolean: true in a criterion
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


# iif() whose branches are literals (or getResourceKey(), or another such iif) carries a plain CASE of them; the
# same iif with every branch ``(x | {})`` (the same collection, but built) takes the general SQL.
IIF_COLUMNS: list[tuple[str, str, str | None]] = [
    ("chain", "iif(status = 'final', {final}, iif(status.exists(), {other}, iif(flags, {flagged}, {{}})))", "string"),
    ("no_else", "iif(flags, {quoted})", "string"),
    ("empty_criterion", "iif({{}}, {a}, {b})", "code"),
    ("many_criterion", "iif(code.coding.code, {a}, {b})", "string"),
    ("key", "iif(flags.first(), {key}, {none})", "id"),
    ("boolean", "iif(value.ofType(Quantity).exists(), {true}, {false})", "boolean"),
    ("other_kind", "iif(flags, {true_text}, {false_text})", "boolean"),
    ("untyped", "iif(status.exists(), {a}, {b})", None),
    ("compared", "iif(status.exists(), {a}, {b}) = 'a'", "boolean"),
    ("negated", "iif(flags, {true}, {{}}).not()", "boolean"),
    ("text_negated", "iif(status.exists(), {a}).not()", "boolean"),
]
LITERALS = {
    "final": "'final'",
    "other": "'other'",
    "flagged": "'flagged'",
    "quoted": "'O\\'Brien \"ü\" \\\\'",
    "a": "'a'",
    "b": "'b'",
    "key": "getResourceKey()",
    "none": "'none'",
    "true": "true",
    "false": "false",
    "true_text": "'true'",
    "false_text": "'false'",
}


def _iif_view(built: bool) -> dict[str, Any]:
    branches = {k: f"({v} | {{}})" if built else v for k, v in LITERALS.items()}
    columns = [{"name": "id", "path": "getResourceKey()", "type": "id"}]
    for name, path, fhir_type in IIF_COLUMNS:
        columns.append({"name": name, "path": path.format(**branches)} | ({"type": fhir_type} if fhir_type else {}))
    columns.append({"name": "listed", "path": "iif(status.exists(), 'x', {})", "collection": True})
    where = [{"path": "iif(flags.exists(), true, false)"}]
    return {"resource": "Observation", "select": [{"column": columns}], "where": where}


def test_iif_of_literals_gives_the_general_answer(run: tuple[Dialect, Any]) -> None:
    dialect, execute = run
    fast, general = (compile_view(load_view_definition(_iif_view(b)), dialect).sql for b in (False, True))
    assert fast != general
    rows = execute(f"SELECT * FROM ({fast}) v ORDER BY id")
    assert rows == execute(f"SELECT * FROM ({general}) v ORDER BY id")
    assert [(r["id"], r["chain"], r["no_else"], r["key"]) for r in rows] == [
        ("arrays", "other", 'O\'Brien "ü" \\', "arrays"),
        ("lone", "flagged", 'O\'Brien "ü" \\', "lone"),
        ("plain", "final", None, "none"),
    ]


@pytest.mark.parametrize("dialect", [DUCKDB, POSTGRES], ids=["duckdb", "postgres"])
def test_iif_of_literals_compiles_to_case(dialect: Dialect) -> None:
    """No collection is built for a literal branch: the column is the CASE of the literals."""
    sql = compile_view(load_view_definition(_iif_view(False)), dialect).sql
    chain = sql[: sql.index('AS "chain"')]
    assert "THEN 'final' ELSE (CASE WHEN" in chain and "'flagged' ELSE NULL END)" in chain
    assert "to_json('final')" not in chain and "jsonb_build_array('final')" not in chain
