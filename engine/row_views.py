"""Detached, read-only copies of ORM rows: the view dataclass names the columns it copies, once."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_View = TypeVar("_View", bound="DataclassInstance")


def row_view(cls: type[_View], row: object, **converted: Any) -> _View:
    """``cls`` filled from ``row``'s attributes of the same names, so it outlives the session that loaded the row;
    ``converted`` gives the fields that need a copy or a conversion (a JSON column's ``dict``, say)."""
    values = {f.name: getattr(row, f.name) for f in fields(cls) if f.name not in converted}
    return cls(**values, **converted)
