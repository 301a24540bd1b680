"""The FHIRPath functions a view may call, each compiled to SQL through the dialect's building blocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from warehouse.sof import _fast
from warehouse.sof._dialects import Kind, SqlDialect, Typed
from warehouse.sof._types import COMPLEX, PRIMITIVE
from warehouse.sof.errors import ViewDefinitionError
from warehouse.sof.fhirpath import Binary, Call, Literal, Member, Node

__all__ = ["call_function"]


class Compiles(Protocol):
    d: SqlDialect
    resource_key: str
    fast: _fast.FastPaths

    def compile(self, node: Node, ctx: Typed) -> Typed: ...
    def coll(self, t: Typed) -> Typed: ...
    def scalar(self, t: Typed, kind: Kind) -> str: ...
    def truth(self, t: Typed) -> str: ...
    def var(self) -> str: ...
    def fail(self, problem: str) -> ViewDefinitionError: ...


def _input(c: Compiles, node: Call, ctx: Typed) -> Typed:
    return ctx if node.base is None else c.compile(node.base, ctx)


def _arity(c: Compiles, node: Call, lo: int, hi: int) -> None:
    if not lo <= len(node.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise c.fail(f"{node.name}() takes {want} argument(s), got {len(node.args)}")


def _where(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 1, 1)
    coll = c.coll(_input(c, node, ctx))
    return Typed("coll", c.d.filter(coll.sql, c.var(), lambda item: c.truth(c.compile(node.args[0], item))))


def _exists(c: Compiles, node: Call, ctx: Typed) -> Typed:
    """``exists()`` of a single-valued lookup chain (``value.ofType(Quantity).exists()``) is the lookup's
    presence, guarded like any fast path: on DuckDB it reads the row's one shared parse, not a parse per call."""
    _arity(c, node, 0, 1)
    if node.args:
        return Typed("bool", f"({c.d.length(_where(c, node, ctx).sql)} > 0)")
    t = _input(c, node, ctx)
    general = f"({c.d.length(c.coll(t).sql)} > 0)"
    return Typed("bool", c.fast.guarded(t, lambda v: f"({v} IS NOT NULL)", general))


def _empty(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 0, 0)
    return Typed("bool", f"({c.d.length(c.coll(_input(c, node, ctx)).sql)} = 0)")


def _position(index: int) -> Callable[[Compiles, Call, Typed], Typed]:
    def at(c: Compiles, node: Call, ctx: Typed) -> Typed:
        _arity(c, node, 0, 0)
        coll = _input(c, node, ctx)
        return coll if coll.kind != "coll" else _fast.at_index(coll, index, Typed("coll", c.d.at(coll.sql, index)))

    return at


def _not(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 0, 0)
    return Typed("bool", f"(NOT {c.truth(_input(c, node, ctx))})")


def _count(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 0, 0)
    return Typed("num", c.d.length(c.coll(_input(c, node, ctx)).sql))


def _type_name(c: Compiles, node: Call) -> str:
    _arity(c, node, 1, 1)
    arg = node.args[0]  # ``Quantity`` or ``FHIR.Quantity``
    if not isinstance(arg, Member) or not (arg.base is None or isinstance(arg.base, Member)):
        raise c.fail(f"{node.name}() needs a type name")
    return arg.name


def _of_type(c: Compiles, node: Call, ctx: Typed) -> Typed:
    """``value.ofType(Quantity)`` is the JSON element ``valueQuantity`` (FHIR's polymorphic ``[x]``);
    on anything else it keeps the resources of that type."""
    type_name = _type_name(c, node)
    if isinstance(node.base, Member):
        if type_name not in PRIMITIVE | COMPLEX:
            raise c.fail(f"ofType({type_name}): not a FHIR data type")
        return c.compile(Member(node.base.base, node.base.name + type_name[0].upper() + type_name[1:]), ctx)
    cond = Binary("=", Member(None, "resourceType"), Literal(type_name))
    return c.compile(Call(node.base, "where", (cond,)), ctx)


def _extension(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 1, 1)
    exts = Member(node.base, "extension")
    return c.compile(Call(exts, "where", (Binary("=", Member(None, "url"), node.args[0]),)), ctx)


def _join(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 0, 1)
    sep = c.scalar(c.compile(node.args[0], ctx), "str") if node.args else "''"
    return Typed("str", c.d.join(c.coll(_input(c, node, ctx)).sql, sep, c.var()))


def _resource_key(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 0, 0)
    return Typed("str", c.resource_key)


def _reference_key(c: Compiles, node: Call, ctx: Typed) -> Typed:
    """The id part of ``reference``: ``Patient/1``, ``https://ehr/fhir/Patient/1/_history/2``,
    ``Patient/1?_format=json`` -> ``1``. A query string or fragment is not part of the id, and a reference with
    a query before any ``Type/id`` (a conditional reference, ``Patient?identifier=...``) names no id: NULL."""
    _arity(c, node, 0, 1)
    target = _type_name(c, node) if node.args else "[A-Za-z]+"
    refs = c.coll(c.compile(Member(node.base, "reference"), ctx))
    text = c.scalar(refs, "str")
    # the match ends at the end or at ``?``/``#`` (never ``.*`` after it: RE2's dot skips newlines, PostgreSQL's not)
    pattern = f"^(?:[^?#]*/)?{target}/([^/?#]+)(?:/_history/[^/?#]*)?(?:$|[?#])"
    return Typed("str", c.d.regex_group(text, pattern, 1))


def _iif(c: Compiles, node: Call, ctx: Typed) -> Typed:
    _arity(c, node, 2, 3)
    if node.base is not None:
        raise c.fail("iif() must be called on its own")
    cond = c.truth(c.compile(node.args[0], ctx))
    compiled = [c.compile(a, ctx) for a in node.args[1:]]
    branches = [c.coll(t).sql for t in compiled] + [c.d.empty]
    general = Typed("coll", f"(CASE WHEN ({cond}) IS TRUE THEN {branches[0]} ELSE {branches[1]} END)")
    scalars = [None if a == Literal(None) else t for a, t in zip(node.args[1:], compiled, strict=True)]
    return _fast.iif(cond, [*scalars, None][:2], general)


def _string_test(sql: Callable[[str, str], str]) -> Callable[[Compiles, Call, Typed], Typed]:
    def test(c: Compiles, node: Call, ctx: Typed) -> Typed:
        _arity(c, node, 1, 1)
        text = c.scalar(_input(c, node, ctx), "str")
        return Typed("bool", sql(text, c.scalar(c.compile(node.args[0], ctx), "str")))

    return test


_FUNCTIONS: dict[str, Callable[[Compiles, Call, Typed], Typed]] = {
    "where": _where,
    "exists": _exists,
    "empty": _empty,
    "first": _position(0),
    "last": _position(-1),
    "not": _not,
    "count": _count,
    "ofType": _of_type,
    "extension": _extension,
    "join": _join,
    "getResourceKey": _resource_key,
    "getReferenceKey": _reference_key,
    "iif": _iif,
    "startsWith": _string_test(lambda a, b: f"starts_with({a}, {b})"),
    "contains": _string_test(lambda a, b: f"(strpos({a}, {b}) > 0)"),
}


def call_function(c: Compiles, node: Call, ctx: Typed) -> Typed:
    fn = _FUNCTIONS.get(node.name)
    if fn is None:
        raise c.fail(f"FHIRPath function {node.name}() is not supported")
    return fn(c, node, ctx)
