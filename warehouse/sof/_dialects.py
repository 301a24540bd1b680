"""The SQL building blocks of FHIRPath collections, one implementation per database.

A FHIRPath collection is a SQL value: a ``JSON[]`` list in DuckDB, a ``jsonb`` array in PostgreSQL. Navigation
flattens arrays, filters keep order, and an absent element is the empty collection, so the compiler above never
needs to know which database it targets. Results of boolean operators stay SQL booleans, where NULL is FHIRPath's
empty collection (SQL's three-valued AND/OR/NOT is FHIRPath's).
"""

from __future__ import annotations

from collections.abc import Callable

from warehouse.sof._integers import duckdb_integer, postgres_integer
from warehouse.sof._values import FastPath, Kind, Steps, Typed

__all__ = ["DIALECTS", "FastPath", "Kind", "SqlDialect", "Steps", "Typed", "quote", "sql_string"]


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqlDialect:
    """DuckDB flavour; :class:`_Postgres` overrides what differs."""

    name = "duckdb"
    text, boolean, bigint, double, json = "VARCHAR", "BOOLEAN", "BIGINT", "DOUBLE", "JSON"
    empty = "CAST([] AS JSON[])"
    array_kind = "'ARRAY'"
    parses_per_call = True  # JSON is text: every json_extract parses the document again

    @staticmethod
    def json_path(steps: Steps) -> str:
        return "$" + "".join(f"[{s}]" if isinstance(s, int) else "." + quote(s) for s in steps)

    def json_at(self, item: str, steps: Steps) -> str:
        """The JSON value at ``steps`` from ``item`` (NULL when absent or when a step meets another shape)."""
        return f"json_extract({item}, {sql_string(self.json_path(steps))})"

    def item(self, sql: str) -> Typed:
        return Typed("coll", f"[{sql}]", item=sql)

    def let(self, value: str, var: str, body: Callable[[str], str]) -> str:
        """``body`` over ``value`` evaluated once: DuckDB re-parses the JSON text at every json_extract, so a value
        used several times is bound to a lambda parameter."""
        return f"list_transform([{value}], lambda {var}: {body(var)})[1]"

    def as_list(self, json_value: str, var: str) -> str:
        """A JSON value (maybe NULL, maybe an array) as a collection."""
        return self.let(
            json_value,
            var,
            lambda j: (
                f"CASE WHEN {j} IS NULL THEN {self.empty} WHEN json_type({j}) = 'ARRAY' "
                f"THEN CAST({j} AS JSON[]) ELSE [{j}] END"
            ),
        )

    def member(self, item: str, field: str) -> str:
        return f"json_extract({item}, {sql_string('$.' + quote(field))})"

    def nav(self, coll: Typed, field: str, var: str) -> Typed:
        if coll.item is not None:
            return Typed("coll", self.as_list(self.member(coll.item, field), var))
        inner = self.as_list(self.member(var, field), var + "j")
        return Typed("coll", f"flatten(list_transform({coll.sql}, lambda {var}: {inner}))")

    def filter(self, coll: str, var: str, cond: Callable[[Typed], str]) -> str:
        return f"list_filter({coll}, lambda {var}: ({cond(self.item(var))}) IS TRUE)"

    def length(self, coll: str) -> str:
        return f"len({coll})"

    def at(self, coll: str, index: int) -> str:
        """The one-element (or empty) collection at ``index`` (negative: from the end)."""
        if index < 0:
            return f"{coll}[{index}:{index}]" if index < -1 else f"{coll}[-1:]"
        return f"{coll}[{index + 1}:{index + 1}]"

    def first(self, coll: str) -> str:
        """The first JSON item, NULL for an empty collection."""
        return f"{coll}[1]"

    def json_kind(self, item: str) -> str:
        return f"json_type({item})"

    kinds = {"num": "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')", "bool": "('BOOLEAN')", "str": "('VARCHAR')"}

    def item_text(self, item: str) -> str:
        return f"json_extract_string({item}, '$')"

    def cast(self, sql: str, sqltype: str) -> str:
        return f"CAST({sql} AS {sqltype})"

    def item_value(self, item: str, kind: Kind) -> str:
        """A JSON item as a SQL scalar of ``kind``; NULL when of another JSON type. A number is a DOUBLE plus ``0.0``,
        so ``-0.0`` (or ``-1e-400``) is the positive zero PostgreSQL answers (JSONB's ``numeric`` has no -0)."""
        text = self.item_text(item)
        if kind == "str":
            return text
        value = f"{self.cast(text, self.double)} + 0.0" if kind == "num" else self.cast(text, self.boolean)
        return f"(CASE WHEN {self.json_kind(item)} IN {self.kinds[kind]} THEN {value} END)"

    def item_integer(self, item: str, quoted: bool = False) -> str:
        """A JSON item as BIGINT, exactly, or NULL; ``quoted``: a string of digits too (warehouse/sof/_integers.py)."""
        return self.let(self.item_text(item), "xi", lambda t: duckdb_integer(self.json_kind(item), t, quoted))

    def to_json(self, sql: str) -> str:
        return f"to_json({sql})"

    def from_scalar(self, scalar: str) -> str:
        """A SQL scalar (NULL = empty) as a collection."""
        return f"(CASE WHEN {scalar} IS NULL THEN {self.empty} ELSE [{self.to_json(scalar)}] END)"

    def concat(self, left: str, right: str) -> str:
        return f"list_concat({left}, {right})"

    def join(self, coll: str, sep: str, var: str) -> str:
        return f"array_to_string(list_transform({coll}, lambda {var}: {self.item_text(var)}), {sep})"

    def each(self, coll: str, alias: str) -> str:
        """A FROM item yielding one row per element: the element in column ``v``, its 1-based position in ``o``."""
        return f"unnest({coll}) WITH ORDINALITY AS {alias}(v, o)"

    def walk(self, seed: str, step: Callable[[Typed], str], alias: str) -> str:
        """A lateral FROM item over a recursive traversal: ``seed`` and, for every element reached, ``step`` of
        it; column ``v`` the element, ``o`` its 1-based position in depth-first (document) order."""
        w, e = f"{alias}w", f"{alias}e"
        children = self.each(step(self.item(w + ".v")), e)
        return (
            f"(WITH RECURSIVE {w}(v, k) AS (SELECT {e}.v, [{e}.o] FROM {self.each(seed, e)} UNION ALL "
            f"SELECT {e}.v, list_append({w}.k, {e}.o) FROM {w} CROSS JOIN LATERAL {children})"
            f" SELECT v, row_number() OVER (ORDER BY k) AS o FROM {w}) AS {alias}"
        )

    def json_out(self, coll: str) -> str:
        return f"to_json({coll})"

    def regex_group(self, text: str, pattern: str, group: int) -> str:
        return f"NULLIF(regexp_extract({text}, {sql_string(pattern)}, {group}), '')"

    def fail(self, message: str, coll: str, sqltype: str) -> str:
        """An expression that raises ``message`` when evaluated (never folded away: it depends on the row)."""
        return f"CAST(error({sql_string(message)} || repeat('', {self.length(coll)})) AS {sqltype})"


class _Postgres(SqlDialect):
    name = "postgres"
    text, boolean, bigint, double, json = "TEXT", "BOOLEAN", "BIGINT", "DOUBLE PRECISION", "JSONB"
    empty = "'[]'::jsonb"
    array_kind = "'array'"
    parses_per_call = False

    def json_at(self, item: str, steps: Steps) -> str:
        # a text[] literal: elements in double quotes, backslash-escaped
        path = ",".join(
            str(s) if isinstance(s, int) else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in steps
        )
        return f"({item} #> {sql_string('{' + path + '}')})"

    kinds = {"num": "('number')", "bool": "('boolean')", "str": "('string')"}

    def item(self, sql: str) -> Typed:
        return Typed("coll", f"jsonb_build_array({sql})", item=sql)

    def let(self, value: str, var: str, body: Callable[[str], str]) -> str:
        return body(value)  # jsonb is parsed once, when stored

    def nav(self, coll: Typed, field: str, var: str) -> Typed:
        # Consecutive steps share one jsonpath: lax mode flattens arrays and skips absent members.
        if coll.jsonpath is not None:
            base, path = coll.jsonpath
        elif coll.item is not None:
            base, path = coll.item, "$"
        else:
            base, path = coll.sql, "$[*]"
        path = f"{path}.{quote(field)}[*]"
        return Typed("coll", f"jsonb_path_query_array({base}, {sql_string('lax ' + path)})", jsonpath=(base, path))

    def filter(self, coll: str, var: str, cond: Callable[[Typed], str]) -> str:
        return (
            f"(SELECT COALESCE(jsonb_agg({var}.v ORDER BY {var}.o), '[]'::jsonb) FROM "
            f"jsonb_array_elements({coll}) WITH ORDINALITY AS {var}(v, o) WHERE ({cond(self.item(var + '.v'))}))"
        )

    def length(self, coll: str) -> str:
        return f"jsonb_array_length({coll})"

    def at(self, coll: str, index: int) -> str:
        pos = f"last - {-index - 1}" if index < 0 else str(index)
        return f"jsonb_path_query_array({coll}, {sql_string(f'lax $[{pos}]')})"

    def first(self, coll: str) -> str:
        return f"({coll} -> 0)"

    def json_kind(self, item: str) -> str:
        return f"jsonb_typeof({item})"

    def item_value(self, item: str, kind: Kind) -> str:
        """As DuckDB answers: a number past a double's range is +-Infinity and one below its least magnitude 0,
        where PostgreSQL's cast raises "out of range" and one such value failed the whole view. Only a number with
        an exponent or of many digits takes the guarded path."""
        if kind != "num":
            return super().item_value(item, kind)
        text = self.item_text(item)
        n = f"({text})::numeric"
        guarded = (
            f"CASE WHEN abs({n}) < 2.5e-324 THEN 0::float8 WHEN abs({n}) > 1.7976931348623157e308 "
            f"THEN sign({n})::float8 * 'Infinity'::float8 ELSE {n}::float8 END"
        )
        value = f"(CASE WHEN {text} ~ '[eE]' OR length({text}) > 300 THEN {guarded} ELSE ({text})::float8 END)"
        return f"(CASE WHEN {self.json_kind(item)} IN {self.kinds[kind]} THEN {value} END)"

    def item_integer(self, item: str, quoted: bool = False) -> str:
        return postgres_integer(self.json_kind(item), self.item_text(item), quoted)

    def item_text(self, item: str) -> str:
        return f"({item} #>> '{{}}')"

    def to_json(self, sql: str) -> str:
        return f"to_jsonb({sql})"

    def from_scalar(self, scalar: str) -> str:
        return f"(CASE WHEN {scalar} IS NULL THEN {self.empty} ELSE jsonb_build_array({scalar}) END)"

    def concat(self, left: str, right: str) -> str:
        return f"({left} || {right})"

    def join(self, coll: str, sep: str, var: str) -> str:
        return (
            f"COALESCE((SELECT string_agg({self.item_text(var + '.v')}, {sep} ORDER BY {var}.o) "
            f"FROM jsonb_array_elements({coll}) WITH ORDINALITY AS {var}(v, o)), '')"
        )

    def each(self, coll: str, alias: str) -> str:
        # PostgreSQL guesses 100 rows per jsonb_array_elements call; a (always true) range on the position
        # makes it guess 1. The guess scales the plan's cost, and past jit_optimize_above_cost a forEach view
        # over a few thousand resources spent seconds in JIT compilation before reading a row.
        e = f"{alias}a"
        return (
            f"(SELECT {e}.v, {e}.o FROM jsonb_array_elements({coll}) WITH ORDINALITY AS {e}(v, o) "
            f"WHERE {e}.o BETWEEN 1 AND 2147483647) AS {alias}(v, o)"
        )

    def walk(self, seed: str, step: Callable[[Typed], str], alias: str) -> str:
        w, e = f"{alias}w", f"{alias}e"
        children = self.each(step(self.item(w + ".v")), e)
        return (
            f"(WITH RECURSIVE {w}(v, k) AS (SELECT {e}.v, ARRAY[{e}.o] FROM {self.each(seed, e)} UNION ALL "
            f"SELECT {e}.v, {w}.k || {e}.o FROM {w} CROSS JOIN LATERAL {children})"
            f" SELECT v, row_number() OVER (ORDER BY k) AS o FROM {w}) AS {alias}"
        )

    def json_out(self, coll: str) -> str:
        return coll

    def regex_group(self, text: str, pattern: str, group: int) -> str:
        # substring(... from pattern) returns the first parenthesised group: make the others non-capturing.
        return f"substring({text} from {sql_string(pattern)})"

    def fail(self, message: str, coll: str, sqltype: str) -> str:
        # PostgreSQL has no raise in expressions: a failing cast carries the message into the error.
        bad = f"{sql_string(message)} || repeat('', {self.length(coll)})"
        return (
            f"CAST(CAST({bad} AS INTEGER) AS {sqltype})"
            if sqltype != self.json
            else f"to_jsonb(CAST({bad} AS INTEGER))"
        )


DIALECTS: dict[str, SqlDialect] = {"duckdb": SqlDialect(), "postgres": _Postgres()}
