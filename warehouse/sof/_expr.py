"""FHIRPath AST -> SQL expression, through the dialect's collection building blocks.

Each value is ``Typed``: a collection, or a SQL scalar (bool/str/num) where NULL means empty. Operators convert
collections to scalars with FHIRPath's singleton rule (one item: its value; none: empty; several: empty here,
FHIRPath would error), and comparisons take the type of their typed side (``value < 1.2`` compares numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import count

from warehouse.sof import _fast
from warehouse.sof._dialects import Kind, SqlDialect, Typed, sql_string
from warehouse.sof._functions import call_function
from warehouse.sof.errors import ViewDefinitionError
from warehouse.sof.fhirpath import Binary, Call, Const, Index, Literal, Member, Node, This
from warehouse.sof.model import Constant

__all__ = ["ExprCompiler"]

_COMPARE = {"=": "=", "!=": "<>", "~": "=", "!~": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_LOGIC = {"and", "or", "xor", "implies"}
_ARITH = {"+", "-", "*", "/", "div", "mod", "&"}
_SCALAR_ORDER: tuple[Kind, ...] = ("num", "bool", "str")


class ExprCompiler:
    """Compiles the FHIRPaths of one view; ``resource_key`` is the SQL of the row's resource id."""

    def __init__(self, d: SqlDialect, constants: Mapping[str, Constant], resource_key: str) -> None:
        self.d = d
        self.constants = constants
        self.resource_key = resource_key
        self._names = count(1)
        self.where = "$"
        self.row_index = "0"  # SQL of %rowIndex in the context being compiled (0-based element position)
        self.fast = _fast.FastPaths(d)

    def var(self) -> str:
        return f"x{next(self._names)}"

    def fail(self, problem: str) -> ViewDefinitionError:
        return ViewDefinitionError(problem, self.where)

    # -- conversions -------------------------------------------------------------------------------------
    def coll(self, t: Typed) -> Typed:
        return t if t.kind == "coll" else Typed("coll", self.d.from_scalar(t.sql))

    def scalar(self, t: Typed, kind: Kind) -> str:
        """The value of ``t`` as a SQL scalar of ``kind`` (singleton rule)."""
        if t.kind == kind:
            return t.sql
        if t.kind != "coll":
            sqltype = {"num": self.d.double, "bool": self.d.boolean, "str": self.d.text}[kind]
            return f"CAST({t.sql} AS {sqltype})"
        if t.item is not None:
            return self.d.item_value(t.item, kind)
        if t.scalar is not None and t.scalar[0] == kind:
            return t.scalar[1]
        general = self.d.let(
            t.sql,
            self.var(),
            lambda c: f"(CASE WHEN {self.d.length(c)} = 1 THEN {self.d.item_value(self.d.first(c), kind)} END)",
        )
        return self.fast.guarded(t, lambda v: self.d.item_value(v, kind), general)

    def truth(self, t: Typed) -> str:
        """Boolean context: empty -> NULL, one boolean -> it, anything else non-empty -> true."""
        if t.kind == "bool":
            return t.sql
        if t.kind != "coll":
            return f"({t.sql} IS NOT NULL OR NULL)"
        if t.scalar is not None:
            return self.truth(Typed(*t.scalar))

        def test(c: str) -> str:
            first = self.d.first(c)
            return (
                f"(CASE WHEN {self.d.length(c)} = 0 THEN NULL WHEN {self.d.json_kind(first)} IN "
                f"{self.d.kinds['bool']} THEN {self.d.item_value(first, 'bool')} ELSE true END)"
            )

        return self.d.let(t.sql, self.var(), test)

    # -- compilation -------------------------------------------------------------------------------------
    def compile(self, node: Node, ctx: Typed) -> Typed:
        if isinstance(node, Literal):
            return self.literal(node.value)
        if isinstance(node, Const):
            if node.name == "rowIndex" and node.name not in self.constants:
                return Typed("num", self.row_index)
            if node.name not in self.constants:
                raise self.fail(f"undefined constant %{node.name}")
            return self.literal(self.constants[node.name].value)
        if isinstance(node, This):
            return ctx
        if isinstance(node, Member):
            base = ctx if node.base is None else self.coll(self.compile(node.base, ctx))
            return _fast.member(base, node.name, self.d.nav(base, node.name, self.var()))
        if isinstance(node, Index):
            coll, index = self.coll(self.compile(node.base, ctx)), self.int_arg(node.index)
            return _fast.at_index(coll, index, Typed("coll", self.d.at(coll.sql, index)))
        if isinstance(node, Binary):
            return self.binary(node, ctx)
        return self.call(node, ctx)

    def literal(self, value: str | int | float | bool | None) -> Typed:
        if value is None:
            return Typed("coll", self.d.empty)
        if isinstance(value, bool):
            return Typed("bool", "true" if value else "false")
        if isinstance(value, int | float):
            return Typed("num", f"CAST({value!r} AS {self.d.double})")
        return Typed("str", sql_string(value))

    def int_arg(self, node: Node) -> int:
        value = self.constants[node.name].value if isinstance(node, Const) and node.name in self.constants else None
        value = node.value if isinstance(node, Literal) else value
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail("an indexer must be an integer literal or constant")
        return value

    def binary(self, node: Binary, ctx: Typed) -> Typed:
        left, right = self.compile(node.left, ctx), self.compile(node.right, ctx)
        op = node.op
        if op in _LOGIC:
            a, b = self.truth(left), self.truth(right)
            sql = {"and": f"({a} AND {b})", "or": f"({a} OR {b})", "xor": f"({a} <> {b})"}.get(op, f"(NOT {a} OR {b})")
            return Typed("bool", sql)
        if op in _COMPARE:
            return self.compare(_COMPARE[op], left, right)
        if op == "|":
            both = Typed("coll", self.d.concat(self.coll(left).sql, self.coll(right).sql))
            return _fast.union(left, right, both)
        if op == "&":
            a, b = (f"COALESCE({self.scalar(t, 'str')}, '')" for t in (left, right))
            return Typed("str", f"({a} || {b})")
        if op == "+" and "str" in (left.kind, right.kind):
            return Typed("str", f"({self.scalar(left, 'str')} || {self.scalar(right, 'str')})")
        if op in _ARITH:
            a, b = self.scalar(left, "num"), self.scalar(right, "num")
            sql = {"div": f"trunc({a} / {b})", "mod": f"mod({a}, {b})"}.get(op, f"({a} {op} {b})")
            return Typed("num", sql)
        raise self.fail(f"operator {op!r} is not supported")

    def compare(self, op: str, left: Typed, right: Typed) -> Typed:
        kind: Kind = next((k for k in _SCALAR_ORDER if k in (left.kind, right.kind)), "str")
        return Typed("bool", f"({self.scalar(left, kind)} {op} {self.scalar(right, kind)})")

    def call(self, node: Call, ctx: Typed) -> Typed:
        return call_function(self, node, ctx)
