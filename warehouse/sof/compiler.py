"""ViewDefinition -> one SELECT over ``fhir_resources`` for DuckDB or PostgreSQL.

The select tree maps onto lateral joins: ``forEach`` is a ``CROSS JOIN LATERAL`` over the collection's elements,
``forEachOrNull`` a ``LEFT JOIN LATERAL`` over a subquery of the whole node (so an empty collection still yields
one row of NULLs), and ``unionAll`` a ``CROSS JOIN LATERAL`` over the ``UNION ALL`` of its branches. Nested
selects without either are just more columns of the same row, so a plain view is a plain SELECT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

from warehouse._sql import Dialect
from warehouse.sof._dialects import DIALECTS, Kind, SqlDialect, Typed, quote, sql_string
from warehouse.sof._expr import ExprCompiler
from warehouse.sof._types import INTEGER, TEXT
from warehouse.sof.errors import ViewDefinitionError
from warehouse.sof.fhirpath import Const
from warehouse.sof.model import Column, SelectNode, ViewDefinition, output_names

__all__ = ["CompiledView", "compile_view"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")


@dataclass(frozen=True)
class CompiledView:
    """``sql`` is one SELECT (no semicolon; run it without bind parameters). ``columns`` lists the output
    after the pass-through ``extra_columns``: (name, declared FHIR type or None). ``json_columns`` names the
    columns returned as JSON: collections, and values whose type the ViewDefinition does not declare."""

    name: str
    sql: str
    columns: list[tuple[str, str | None]]
    json_columns: frozenset[str]
    dialect: str


class _Builder:
    def __init__(self, d: SqlDialect, ex: ExprCompiler) -> None:
        self.d = d
        self.ex = ex
        self._aliases = count(1)
        self.json_columns: set[str] = set()

    def alias(self, prefix: str) -> str:
        return f"{prefix}{next(self._aliases)}"

    def node(self, node: SelectNode, ctx: Typed, idx: str, joins: list[str], cols: list[tuple[str, str]]) -> None:
        """Add ``node``'s joins and columns; ``ctx`` is its focus and ``idx`` the SQL of its ``%rowIndex``."""
        if node.repeat:
            self.ex.where, self.ex.row_index = f"{node.where}.repeat", idx
            walk = self.d.walk(
                self.children(node, ctx), lambda item: self.children(node, item), alias := self.alias("f")
            )
            joins.append(f"CROSS JOIN LATERAL {walk}")
            self.body(node, self.d.item(f"{alias}.v"), f"({alias}.o - 1)", joins, cols)
            return
        if node.for_each is None:
            self.body(node, ctx, idx, joins, cols)
            return
        self.ex.where, self.ex.row_index = f"{node.where}.{'forEachOrNull' if node.or_null else 'forEach'}", idx
        each = self.d.each(self.ex.coll(self.ex.compile(node.for_each, ctx)).sql, alias := self.alias("f"))
        elem, elem_idx = self.d.item(f"{alias}.v"), f"({alias}.o - 1)"
        if not node.or_null:
            joins.append(f"CROSS JOIN LATERAL {each}")
            self.body(node, elem, elem_idx, joins, cols)
            return
        sub_joins: list[str] = []
        sub_cols: list[tuple[str, str]] = []
        self.body(node, elem, elem_idx, sub_joins, sub_cols)
        sub = self.alias("s")
        rest = " ".join(sub_joins)
        joins.append(f"LEFT JOIN LATERAL (SELECT {_select_list(sub_cols)} FROM {each} {rest}) AS {sub} ON true")
        # The row of an empty collection is all NULLs, except that its %rowIndex is 0.
        indexes = {c.name for c in node.columns if c.path == Const("rowIndex")}
        cols.extend(
            (name, f"COALESCE({sub}.{quote(name)}, 0)" if name in indexes else f"{sub}.{quote(name)}")
            for name, _ in sub_cols
        )

    def children(self, node: SelectNode, ctx: Typed) -> str:
        """The collection one ``repeat`` step reaches from ``ctx``: every repeat path, concatenated."""
        colls = [self.ex.coll(self.ex.compile(path, ctx)).sql for path in node.repeat]
        out = colls[0]
        for coll in colls[1:]:
            out = self.d.concat(out, coll)
        return out

    def body(self, node: SelectNode, ctx: Typed, idx: str, joins: list[str], cols: list[tuple[str, str]]) -> None:
        for col in node.columns:
            self.ex.row_index = idx
            cols.append((col.name, self.column(col, ctx)))
        for child in node.selects:
            self.node(child, ctx, idx, joins, cols)
        if node.union_all:
            branches = [self.branch(b, ctx, idx) for b in node.union_all]
            union = self.alias("u")
            joins.append(f"CROSS JOIN LATERAL ({' UNION ALL '.join(branches)}) AS {union}")
            cols.extend((name, f"{union}.{quote(name)}") for name in output_names(node.union_all[0]))

    def branch(self, node: SelectNode, ctx: Typed, idx: str) -> str:
        joins: list[str] = []
        cols: list[tuple[str, str]] = []
        self.node(node, ctx, idx, joins, cols)
        return f"SELECT {_select_list(cols)} FROM (SELECT 1 AS one) AS {self.alias('d')} {' '.join(joins)}"

    def column(self, col: Column, ctx: Typed) -> str:
        """A column's SQL: a JSON array for collections, else the single value (several values raise)."""
        self.ex.where = col.where
        t = self.ex.compile(col.path, ctx)
        if col.collection:
            self.json_columns.add(col.name)
            return self.d.json_out(self.ex.coll(t).sql)
        kind, sqltype = _output(self.d, col.type)
        if t.kind != "coll":  # a boolean, string or number computed in SQL
            if kind is None:
                return t.sql if col.type is None else self.d.to_json(t.sql)
            return self.d.cast(self.ex.scalar(t, kind), sqltype)
        if kind is None:
            self.json_columns.add(col.name)
            sqltype = self.d.json

        def value_of(item: str) -> str:
            if kind is None:
                return item
            if sqltype == self.d.bigint:
                return self.d.item_integer(item, quoted=col.type == "integer64")  # R5 JSON: a string
            return self.d.item_value(item, kind)

        if t.item is not None:
            return value_of(t.item)
        if t.scalar is not None and t.scalar[0] == kind and sqltype != self.d.bigint:
            return self.d.cast(t.scalar[1], sqltype)  # at most one item: no multi-value error possible
        problem = f"column {col.name!r} yields more than one value; mark it collection: true or narrow its path"
        general = self.d.let(
            t.sql,
            self.ex.var(),
            lambda c: (
                f"(CASE WHEN {self.d.length(c)} > 1 THEN {self.d.fail(problem, c, sqltype)} "
                f"ELSE {value_of(self.d.first(c))} END)"
            ),
        )
        return self.ex.fast.guarded(t, value_of, general)

    def condition(self, t: Typed, where: str) -> str:
        """A view-level ``where``: must be boolean; a non-boolean value raises when the row is evaluated."""
        if t.kind == "bool":
            return t.sql
        if t.kind != "coll":
            raise ViewDefinitionError("where path must evaluate to a boolean", where)
        problem = "where path evaluated to a non-boolean value"

        def test(c: str) -> str:
            first = self.d.first(c)
            return (
                f"(CASE WHEN {self.d.length(c)} = 0 THEN NULL WHEN {self.d.length(c)} = 1 AND "
                f"{self.d.json_kind(first)} IN {self.d.kinds['bool']} THEN {self.d.item_value(first, 'bool')} "
                f"ELSE {self.d.fail(problem, c, self.d.boolean)} END)"
            )

        return self.d.let(t.sql, self.ex.var(), test)


def _output(d: SqlDialect, fhir_type: str | None) -> tuple[Kind | None, str]:
    """(value kind, SQL type) of a column declared ``fhir_type``; kind None: the JSON value itself."""
    if fhir_type == "boolean":
        return "bool", d.boolean
    if fhir_type in INTEGER:
        return "num", d.bigint
    if fhir_type == "decimal":
        return "num", d.double
    if fhir_type in TEXT:
        return "str", d.text
    return None, d.json


def _select_list(cols: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{sql} AS {quote(name)}" for name, sql in cols)


def _check_identifiers(*names: str) -> None:
    for name in names:
        if not _IDENT.match(name):
            raise ViewDefinitionError(f"{name!r} is not a plain SQL identifier")


def compile_view(
    view: ViewDefinition,
    dialect: Dialect,
    *,
    source: str = "fhir_resources",
    resource_column: str = "resource",
    type_column: str = "resource_type",
    where_sql: str = "deleted_at IS NULL",
    extra_columns: Sequence[str] = (),
    id_column: str = "id",
) -> CompiledView:
    """One SELECT of ``view`` over ``source``: ``extra_columns`` of the source first (provenance), then the
    view's columns; rows of ``view.resource`` where ``where_sql`` holds. ``getResourceKey()`` is ``id_column``."""
    _check_identifiers(source, resource_column, type_column, id_column, *extra_columns)
    d = DIALECTS[dialect.name]
    builder = _Builder(d, ExprCompiler(d, view.constants, f"r.{quote(id_column)}"))
    root = d.item(f"r.{quote(resource_column)}")
    builder.ex.fast.shared_base = root.item
    joins: list[str] = []
    cols: list[tuple[str, str]] = []
    builder.node(view.select, root, "0", joins, cols)
    clash = sorted(set(extra_columns) & {name for name, _ in cols})
    if clash:
        raise ViewDefinitionError(f"view columns clash with pass-through columns: {', '.join(clash)}", "$.select")
    conditions = []
    for path, where in view.where:
        builder.ex.where, builder.ex.row_index = f"{where}.path", "0"
        conditions.append(f"({builder.condition(builder.ex.compile(path, root), f'{where}.path')}) IS TRUE")
    shared = builder.ex.fast.prefetch_sql(quote(resource_column))
    star = f"*, {shared}" if shared else "*"
    inner = f"SELECT {star} FROM {source} WHERE {type_column} = {sql_string(view.resource)} AND ({where_sql})"
    select = [f"r.{quote(c)} AS {quote(c)}" for c in extra_columns] + [_select_list(cols)]
    sql = f"SELECT {', '.join(select)} FROM ({inner}) AS r {' '.join(joins)}".rstrip()
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    types = {c.name: c.type for c in _all_columns(view.select)}
    return CompiledView(view.name, sql, [(n, types[n]) for n, _ in cols], frozenset(builder.json_columns), d.name)


def _all_columns(node: SelectNode) -> list[Column]:
    out = list(node.columns)
    for child in (*node.selects, *node.union_all):
        out += _all_columns(child)
    return out
