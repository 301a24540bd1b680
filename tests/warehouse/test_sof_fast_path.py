"""The single-path fast path of warehouse.sof (warehouse/sof/_fast.py) gives FHIRPath's answer on data of the
expected shape and on data of another shape alike (a lone object where FHIR has an array, an array where it has
one value): the lookup serves the first, the guarded general SQL the second. On DuckDB and PostgreSQL."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
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
        f"VALUES ('c1', 'Observation', {ph}, {ph}, CAST({ph} AS {d.json}), now())"
    )


def _rows(resources: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    """(id, tenant_id, resource): ``tenant`` (default 't1') is the tenant, and not part of the resource."""
    rows = []
    for r in resources:
        body = {k: v for k, v in r.items() if k != "tenant"}
        rows.append((r["id"], r.get("tenant", "t1"), json.dumps({"resourceType": "Observation", **body})))
    return rows


@contextmanager
def _backend(request: pytest.FixtureRequest, resources: list[dict[str, Any]]) -> Iterator[tuple[Dialect, Any]]:
    """(dialect, run(sql) -> rows as dicts) over fhir_resources holding ``resources``."""
    if request.param == "duckdb":
        con = duckdb.connect()
        for ddl in schema_ddl(DUCKDB):
            con.execute(ddl)
        con.executemany(_insert(DUCKDB), _rows(resources))

        def duck(sql: str) -> list[dict[str, Any]]:
            cur = con.execute(sql)
            return [dict(zip([c[0] for c in cur.description], row, strict=True)) for row in cur.fetchall()]

        try:
            yield DUCKDB, duck
        finally:
            con.close()
        return
    url = request.getfixturevalue("postgres_url").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as pg:
        for ddl in schema_ddl(POSTGRES):
            pg.execute(ddl)
        pg.cursor().executemany(_insert(POSTGRES), _rows(resources))

        def post(sql: str) -> list[dict[str, Any]]:
            cur = pg.execute(sql)
            return [dict(zip([c.name for c in cur.description or ()], row, strict=True)) for row in cur.fetchall()]

        yield POSTGRES, post


@pytest.fixture(params=["duckdb", "postgres"])
def run(request: pytest.FixtureRequest) -> Iterator[tuple[Dialect, Any]]:
    with _backend(request, RESOURCES) as backend:
        yield backend


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


# Property: over many generated shapes, iif() compiled to its CASE answers as the general SQL does on both
# dialects, the latter forced by writing every branch ``(x | {})`` (the same collection, built). The shapes: the
# criterion empty, several items, not a boolean, a boolean collection, nested iif; branches of both kinds, empty,
# computed, getResourceKey() of a resource without one; the iif read as a column of each type, compared, tested,
# concatenated with ``&`` and ``+``, inside where()/exists(), in a forEach and as a view's where.
SHAPES: list[dict[str, Any]] = [
    {"id": "s1", "status": "final", "flags": [False, True], "valueQuantity": {"value": 5}, "subject": {}}
    | {"code": {"coding": [{"code": "a"}, {"code": "b", "display": "B"}]}},
    {"id": "s2", "flags": True, "code": {"coding": {"code": "x", "display": "X"}}, "tenant": None},
    {"id": "s3", "status": ["amended"], "flags": "yes", "code": [{"coding": [{"code": "c1"}]}, {"coding": []}]},
    {"id": "s4", "status": "", "flags": [], "code": {}, "valueQuantity": {"value": 1}, "tenant": 'O\'T "ü"'},
    {
        "id": "s5",
        "status": "b",
        "flags": False,
        "subject": {"reference": "Patient/p'1"},
        "code": {"coding": [{"code": "a", "display": ""}]},
    },
    {"id": "s6", "status": ["x", "y"], "flags": [True], "tenant": None},
    {
        "id": "s7",
        "status": "final",
        "flags": {"a": 1},
        "subject": {"reference": "Group/g"},
        "code": {"coding": [{"display": "only"}]},
    },
    {"id": "s8", "flags": [True, "no"], "code": {"coding": [{"code": "b"}, {"code": "a", "display": "A"}]}},
]
_STR = ["'a'", "'b'", "''", "'O\\'Brien \"ü\" \\\\'", "'true'", "'%_'", "' Ä '", "getResourceKey()"]
_STR_COMPUTED = [
    "status & '-'",
    "code.coding.code.join(',')",
    "'k' + status",
    "code.coding.first().code",
    "subject.getReferenceKey()",
]
_BOOL = ["true", "false", "status.exists()", "flags.empty()", "status = 'final'", "flags.not()", "flags.first()"]
_CRITERIA = [
    "status = 'final'", "status.exists()", "flags", "flags.first()", "{}", "(true | false)", "(false | true)",
    "code.coding.code", "status", "flags.empty()", "true", "false", "'x'", "valueQuantity.value > 3",
    "code.coding.where(code = 'a').exists()", "getResourceKey()",
]  # fmt: skip
_CODING_CRITERIA = ["code = 'a'", "display.exists()", "code", "display", "{}", "$this.code = 'b'", "flags"]
_CONTEXTS: list[tuple[str, str | None]] = [  # (path around {e}, type; "*": collection)
    ("{e}", "string"), ("{e}", "code"), ("{e}", None), ("{e}", "boolean"), ("{e}", "*"), ("{e}", "integer"),
    ("{e} = 'a'", "boolean"), ("{e} != 'b'", "boolean"), ("{e} < 'b'", "boolean"), ("{e} = {f}", "boolean"),
    ("{e} = true", "boolean"), ("'<' & {e} & '>'", "string"), ("{e} + '!'", "string"), ("{e}.not()", "boolean"),
    ("{e} and true", "boolean"), ("{e} or {{}}", "boolean"), ("{e} xor flags", "boolean"),
    ("{e} implies false", "boolean"), ("{e}.exists()", "boolean"), ("{e}.empty()", "boolean"),
    ("{e}.count()", "integer"), ("{e}.first()", "string"), ("{e}.startsWith('a')", "boolean"),
    ("{e}.contains('B')", "boolean"), ("iif({e}, 'y', 'n')", "string"), ("{e}.join('|')", "string"),
    ("code.coding.where({c}).code", "*"), ("code.coding.exists({c})", "boolean"),
    ("code.coding.where({c}).count()", "integer"), ("'[' & iif({e}, {e}, {f}) & ']'", "string"),
]  # fmt: skip


def _pair(rng: random.Random, criteria: list[str], depth: int, kind: str = "") -> tuple[str, str]:
    """(iif, the same with every non-empty branch ``(x | {})``); branches of ``kind`` (else either)."""
    kind = kind or rng.choice(["str", "bool"])

    def branch(kind: str) -> tuple[str, str]:
        r = rng.random()
        if r < 0.2:
            return "{}", "{}"
        if depth and r < 0.45:
            return _pair(rng, criteria, depth - 1, kind)
        x = rng.choice(_STR + _STR_COMPUTED if kind == "str" else _BOOL)
        return x, f"({x} | {{}})"

    crit = _pair(rng, criteria, depth - 1) if depth and rng.random() < 0.2 else (rng.choice(criteria),) * 2
    branches = [branch(kind), branch(kind if rng.random() < 0.9 else {"str": "bool", "bool": "str"}[kind])]
    del branches[2 if rng.random() < 0.7 else 1 :]
    fast, built = (f"iif({crit[i]}, {', '.join(b[i] for b in branches)})" for i in (0, 1))
    return fast, built


def _property_views(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(fast views, built views): one of many columns, one forEachOrNull, and views with a where."""
    rng = random.Random(seed)
    cols: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    each: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for n in range(90):
        template, fhir_type = rng.choice(_CONTEXTS)
        e, f, c = _pair(rng, _CRITERIA, 2), _pair(rng, _CRITERIA, 2), _pair(rng, _CODING_CRITERIA, 1)
        ce, cf = _pair(rng, _CODING_CRITERIA, 2), _pair(rng, _CODING_CRITERIA, 1)
        kind = {"collection": True} if fhir_type == "*" else {"type": fhir_type} if fhir_type else {}
        for i in (0, 1):
            path = template.format(e=e[i], f=f[i], c=c[i])
            cols[i].append({"name": f"c{n}", "path": path} | kind)
            each[i].append({"name": f"e{n}", "path": template.format(e=ce[i], f=cf[i], c=c[i])} | kind)
    out: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    key = {"name": "k", "path": "%rowIndex", "type": "integer"}
    for i in (0, 1):
        out[i].append({"resource": "Observation", "select": [{"column": cols[i]}]})
        nested = {"forEachOrNull": f"code.coding.where({c[i]})", "column": [key, *each[i][:40]]}
        out[i].append({"resource": "Observation", "select": [nested]})
    for _ in range(6):
        w = _pair(rng, _CRITERIA, 2, "bool")
        for i in (0, 1):
            out[i].append({"resource": "Observation", "select": [{"column": cols[i][:3]}], "where": [{"path": w[i]}]})
    return out


def _outcome(execute: Any, sql: str) -> Any:
    try:
        return sorted((repr(sorted(r.items())) for r in execute(sql)), key=str)
    except (duckdb.Error, psycopg.Error) as err:  # a where of a non-boolean value raises: so must both
        return type(err).__name__


@pytest.fixture(params=["duckdb", "postgres"])
def shapes(request: pytest.FixtureRequest) -> Iterator[tuple[Dialect, Any]]:
    with _backend(request, SHAPES) as backend:
        yield backend


@pytest.mark.parametrize("seed", range(4))
def test_iif_case_answers_as_the_general_sql_over_many_shapes(shapes: tuple[Dialect, Any], seed: int) -> None:
    dialect, execute = shapes
    fast_views, built_views = _property_views(seed)
    for n, (fast_view, built_view) in enumerate(zip(fast_views, built_views, strict=True)):
        compile_args: dict[str, Any] = {"extra_columns": ("id",), "id_column": "tenant_id"}  # tenant NULL: no key
        fast = compile_view(load_view_definition(fast_view), dialect, **compile_args).sql
        built = compile_view(load_view_definition(built_view), dialect, **compile_args).sql
        assert fast != built
        outcome = _outcome(execute, fast)
        assert outcome == _outcome(execute, built), (fast_view, built_view)
        assert n > 1 or (isinstance(outcome, list) and len(outcome) >= len(SHAPES))  # rows, not an error
