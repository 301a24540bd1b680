"""The compiled form of a FHIRPath value, shared by the dialects, the expression compiler and its fast paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FastPath", "Kind", "Steps", "Typed"]

Kind = Literal["coll", "bool", "str", "num"]
Steps = tuple[str | int, ...]  # members and array indexes from a JSON item


@dataclass(frozen=True)
class FastPath:
    """Lookup chains equal to a collection when the data has the expected shape (warehouse/sof/_fast.py):
    one chain, or several concatenated (``first``: only the first present of them is meant)."""

    alts: tuple[tuple[str, Steps], ...]
    first: bool = False


@dataclass(frozen=True)
class Typed:
    """A compiled FHIRPath value. ``item`` is set when the collection is known to be exactly one JSON item
    (the resource, a forEach element), which lets navigation skip the per-element loop."""

    kind: Kind
    sql: str
    item: str | None = None
    jsonpath: tuple[str, str] | None = None  # PostgreSQL: (JSON item, lax path) the collection was queried with
    fast: FastPath | None = None
    # (kind, SQL scalar, NULL = empty) equal to a collection of at most one item of that kind (``iif()`` of
    # literals): what a consumer wanting that kind may read instead of the collection (warehouse/sof/_fast.py)
    scalar: tuple[Kind, str] | None = None
