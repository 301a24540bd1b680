"""The fast path of single-valued FHIRPaths: ``code.coding.first().code`` as one JSON path lookup.

The general SQL of a FHIRPath treats every element as maybe-repeating: it builds collections, flattens arrays and
checks that a column got at most one value, which costs several JSON function calls per step. Most paths of a
view are chains of members and ``first()``/``[n]`` over elements that hold one value, where all of that work is the
same as reading ``#> '{code,coding,0,code}'`` (PostgreSQL) or ``json_extract(r, '$.code.coding[0].code')``
(DuckDB). The compiler cannot know cardinality without the FHIR schema, so instead of trusting a table it checks
the shape of the data the lookup walks through, per row and cheaply:

- a member followed by another member (or ending the path) must not hold a JSON array: FHIRPath would flatten it;
- a member followed by an index must hold an array, or be absent: ``first()`` of a lone object is the object.

When every check holds, the lookup is exactly the FHIRPath result (at most one item, so no multi-value error is
possible); when one fails, the row takes the general SQL (``CASE WHEN checks THEN lookup ELSE general END``). A
union of such paths followed by ``first()`` (``(a | b).first()``) is the first present lookup, ``COALESCE``.

``iif(criterion, a, b)`` whose branches are SQL scalars of one kind (literals, ``getResourceKey()``, ``exists()``,
``&``: any value compiled as a scalar, or another such ``iif``) or empty (``{}``, no ``b``) is at most one item, so
the collection the general SQL builds for every branch (``[to_json('Quantity')]``) is only ever read back as that
scalar: ``CASE WHEN criterion THEN a ELSE b END`` is carried beside it (``Typed.scalar``) for a column or operator
wanting that kind. Only strings and booleans: the round trip through JSON leaves them unchanged, where a number may
come back as another value (``-0``, infinity).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from warehouse.sof._dialects import FastPath, Kind, SqlDialect, Steps, Typed, sql_string

__all__ = ["SCALAR_KINDS", "SHARED_COLUMN", "FastPaths", "at_index", "iif", "member", "union"]

SCALAR_KINDS: tuple[Kind, ...] = ("str", "bool")  # the kinds a collection may carry as ``Typed.scalar``

SHARED_COLUMN = 'r."_sof_lookups"'  # a column the compiler adds to the source row (DuckDB)


def _single(t: Typed) -> tuple[str, Steps] | None:
    """(JSON item, steps) when ``t`` is one lookup chain (or a lone JSON item, the empty chain)."""
    if t.fast is not None and len(t.fast.alts) == 1:
        return t.fast.alts[0]
    if t.item is not None and t.fast is None:
        return t.item, ()
    return None


def member(base: Typed, name: str, result: Typed) -> Typed:
    """``result`` (the general navigation of ``base.name``) with the lookup chain extended, if ``base`` has one."""
    single = _single(base)
    if single is None:
        return result
    return replace(result, fast=FastPath(((single[0], (*single[1], name)),)))


def at_index(base: Typed, index: int, result: Typed) -> Typed:
    """``result`` (``base[index]`` / ``first()``) with the chain extended: only right after a member (an array
    element), or ``first()`` of a union of chains (the first present of them)."""
    if index < 0 or base.fast is None:
        return result
    alts = base.fast.alts
    if len(alts) == 1 and alts[0][1] and isinstance(alts[0][1][-1], str):
        return replace(result, fast=FastPath(((alts[0][0], (*alts[0][1], index)),)))
    if len(alts) > 1 and index == 0:
        return replace(result, fast=FastPath(alts, first=True))
    return result


def union(left: Typed, right: Typed, result: Typed) -> Typed:
    """``left | right``: the chains of both (a value only under ``first()``: it may hold two items)."""
    if left.fast is None or right.fast is None:
        return result
    return replace(result, fast=FastPath(left.fast.alts + right.fast.alts))


def iif(criterion: str, branches: list[Typed | None], result: Typed) -> Typed:
    """``result`` (the general ``iif``) carrying the ``CASE`` of its branches (None: empty) when each is a
    string or each a boolean scalar, or empty."""
    scalars: list[tuple[Kind, str] | None] = []
    for t in branches:
        scalar = None if t is None else (t.kind, t.sql) if t.kind != "coll" else t.scalar
        if t is not None and (scalar is None or scalar[0] not in SCALAR_KINDS):
            return result
        scalars.append(scalar)
    kinds = {s[0] for s in scalars if s is not None}
    if len(kinds) != 1:
        return result
    then, other = (("NULL" if s is None else s[1]) for s in scalars)
    return replace(result, scalar=(kinds.pop(), f"(CASE WHEN ({criterion}) IS TRUE THEN {then} ELSE {other} END)"))


class FastPaths:
    """Builds the guarded lookup SQL; ``lookup`` turns (JSON item, steps) into the SQL of the JSON value there
    (the compiler may serve the resource's lookups from one parse per row)."""

    def __init__(self, d: SqlDialect) -> None:
        self.d = d
        # DuckDB parses the JSON text again at every json_extract: the resource's lookups are made once per row,
        # by one json_extract of all their paths (``prefetch_sql``), and read from that list.
        self.shared_base: str | None = None
        self.shared: dict[str, int] = {}

    def lookup(self, base: str, steps: Steps) -> str:
        if self.d.parses_per_call and base == self.shared_base:
            index = self.shared.setdefault(self.d.json_path(steps), len(self.shared) + 1)
            return f"{SHARED_COLUMN}[{index}]"
        return self.d.json_at(base, steps)

    def prefetch_sql(self, resource_column: str) -> str | None:
        """The select item of the resource's shared lookups (aliased as ``SHARED_COLUMN``), None when none."""
        if not self.shared:
            return None
        paths = ", ".join(sql_string(p) for p in self.shared)
        return f"json_extract({resource_column}, [{paths}]) AS {SHARED_COLUMN.split('.')[1]}"

    def guarded(self, t: Typed, value_of: Callable[[str], str], general: str) -> str:
        """``value_of`` the JSON value from the lookup when the data has the expected
        shape, else ``general``; ``general`` itself when ``t`` has no usable chain."""
        fast = t.fast
        if fast is None or not (len(fast.alts) == 1 or fast.first) or any(not s for _, s in fast.alts):
            return general
        checks: dict[str, None] = {}
        for base, steps in fast.alts:
            for i, step in enumerate(steps):
                if not isinstance(step, str):
                    continue
                kind, arr = self.d.json_kind(self.lookup(base, steps[: i + 1])), self.d.array_kind
                if i + 1 < len(steps) and isinstance(steps[i + 1], int):
                    checks[f"(COALESCE({kind}, {arr}) = {arr})"] = None
                else:
                    checks[f"({kind} IS DISTINCT FROM {arr})"] = None
        values = [self.lookup(base, steps) for base, steps in fast.alts]
        value = values[0] if len(values) == 1 else f"COALESCE({', '.join(values)})"
        return f"(CASE WHEN {' AND '.join(checks)} THEN {value_of(value)} ELSE {general} END)"
