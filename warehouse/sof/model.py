"""A validated SQL-on-FHIR v2 ViewDefinition: parsed once, every FHIRPath already parsed.

Validation names the JSON path of the first problem (``$.select[0].forEach``) so a ViewDefinition author can
fix it without reading the compiler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from warehouse.sof.errors import ViewDefinitionError
from warehouse.sof.fhirpath import Node, parse_fhirpath

__all__ = ["Column", "Constant", "SelectNode", "ViewDefinition", "load_view_definition"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\Z")
_RESOURCE = re.compile(r"^[A-Z][A-Za-z]*\Z")
_SELECT_KEYS = frozenset({"column", "select", "forEach", "forEachOrNull", "unionAll", "repeat"})


@dataclass(frozen=True)
class Column:
    name: str
    path: Node
    type: str | None
    collection: bool
    where: str  # JSON path, for errors raised while compiling


@dataclass(frozen=True)
class SelectNode:
    columns: tuple[Column, ...]
    selects: tuple[SelectNode, ...]
    union_all: tuple[SelectNode, ...]
    for_each: Node | None
    or_null: bool  # forEachOrNull rather than forEach
    where: str
    repeat: tuple[Node, ...] = ()  # repeat: recursive traversal along these paths


@dataclass(frozen=True)
class Constant:
    name: str
    value: str | int | float | bool


@dataclass(frozen=True)
class ViewDefinition:
    name: str
    resource: str
    constants: Mapping[str, Constant]
    select: SelectNode  # the view itself: no columns or forEach of its own, its selects are the top-level ones
    where: tuple[tuple[Node, str], ...]  # (path, JSON path of it)
    raw: Mapping[str, Any]


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ViewDefinitionError("must be a JSON object", where)
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ViewDefinitionError("must be a JSON array", where)
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ViewDefinitionError("must be a non-empty string", where)
    return value


def _column(raw: object, where: str) -> Column:
    col = _obj(raw, where)
    name = _string(col.get("name"), f"{where}.name")
    if not _NAME.match(name):
        raise ViewDefinitionError(f"column name {name!r} must match {_NAME.pattern}", f"{where}.name")
    ctype = col.get("type")
    if ctype is not None:
        ctype = _string(ctype, f"{where}.type")
    collection = col.get("collection", False)
    if not isinstance(collection, bool):
        raise ViewDefinitionError("must be true or false", f"{where}.collection")
    path = parse_fhirpath(_string(col.get("path"), f"{where}.path"), f"{where}.path")
    return Column(name, path, ctype, collection, f"{where}.path")


def _repeat(raw: object, where: str) -> tuple[Node, ...]:
    paths = _list(raw, where)
    if not paths:
        raise ViewDefinitionError("repeat needs at least one path", where)
    return tuple(parse_fhirpath(_string(p, f"{where}[{i}]"), f"{where}[{i}]") for i, p in enumerate(paths))


def _select(raw: object, where: str) -> SelectNode:
    sel = _obj(raw, where)
    iterations = [k for k in ("forEach", "forEachOrNull", "repeat") if k in sel]
    if len(iterations) > 1:
        raise ViewDefinitionError(f"{' and '.join(iterations)} are exclusive", where)
    key = iterations[0] if iterations and iterations[0] != "repeat" else None
    for_each = parse_fhirpath(_string(sel[key], f"{where}.{key}"), f"{where}.{key}") if key else None
    repeat = _repeat(sel["repeat"], f"{where}.repeat") if "repeat" in sel else ()
    columns = tuple(_column(c, f"{where}.column[{i}]") for i, c in enumerate(_list(sel.get("column"), where)))
    selects = tuple(_select(s, f"{where}.select[{i}]") for i, s in enumerate(_list(sel.get("select"), where)))
    unions = tuple(_select(s, f"{where}.unionAll[{i}]") for i, s in enumerate(_list(sel.get("unionAll"), where)))
    if not (columns or selects or unions):
        raise ViewDefinitionError("a select needs at least one of column, select or unionAll", where)
    node = SelectNode(columns, selects, unions, for_each, key == "forEachOrNull", where, repeat)
    if unions:
        first = output_names(unions[0])
        for i, branch in enumerate(unions[1:], start=1):
            if output_names(branch) != first:
                raise ViewDefinitionError(
                    f"unionAll branches must have the same columns in the same order: {first} vs "
                    f"{output_names(branch)}",
                    f"{where}.unionAll[{i}]",
                )
    return node


def output_names(node: SelectNode) -> list[str]:
    """The columns a select yields, in the spec's order: its columns, its selects', then its unionAll's."""
    names = [c.name for c in node.columns]
    for child in node.selects:
        names += output_names(child)
    if node.union_all:
        names += output_names(node.union_all[0])
    return names


def _constant(raw: object, where: str) -> Constant:
    const = _obj(raw, where)
    name = _string(const.get("name"), f"{where}.name")
    values = [k for k in const if k.startswith("value")]
    if len(values) != 1:
        raise ViewDefinitionError(f"constant {name!r} needs exactly one value[x]", where)
    value = const[values[0]]
    if not isinstance(value, str | int | float | bool):
        raise ViewDefinitionError(f"constant {name!r} must have a primitive value", f"{where}.{values[0]}")
    return Constant(name, value)


def parse_view_definition(raw: Mapping[str, Any]) -> ViewDefinition:
    """Validate a ViewDefinition given as a JSON object."""
    view = _obj(raw, "$")
    resource = _string(view.get("resource"), "$.resource")
    if not _RESOURCE.match(resource):
        raise ViewDefinitionError(f"{resource!r} is not a FHIR resource type", "$.resource")
    name = view.get("name", resource.lower())
    if not isinstance(name, str) or not _NAME.match(name):
        raise ViewDefinitionError(f"view name must match {_NAME.pattern}", "$.name")
    constants: dict[str, Constant] = {}
    for i, raw_const in enumerate(_list(view.get("constant"), "$.constant")):
        const = _constant(raw_const, f"$.constant[{i}]")
        constants[const.name] = const
    selects = _list(view.get("select"), "$.select")
    if not selects:
        raise ViewDefinitionError("a ViewDefinition needs at least one select", "$.select")
    top = SelectNode((), tuple(_select(s, f"$.select[{i}]") for i, s in enumerate(selects)), (), None, False, "$")
    names = output_names(top)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ViewDefinitionError(f"column names must be unique; repeated: {', '.join(dupes)}", "$.select")
    wheres: list[tuple[Node, str]] = []
    for i, raw_where in enumerate(_list(view.get("where"), "$.where")):
        at = f"$.where[{i}]"
        wheres.append((parse_fhirpath(_string(_obj(raw_where, at).get("path"), f"{at}.path"), f"{at}.path"), at))
    return ViewDefinition(name, resource, constants, top, tuple(wheres), view)


def load_view_definition(source: str | Path | Mapping[str, Any] | Sequence[Any]) -> ViewDefinition:
    """A validated ViewDefinition from a JSON file path or an already-parsed JSON object."""
    if isinstance(source, str | Path):
        try:
            raw = orjson.loads(Path(source).read_bytes())
        except OSError as exc:
            raise ViewDefinitionError(f"cannot read {source}: {exc.strerror}") from exc
        except orjson.JSONDecodeError as exc:
            raise ViewDefinitionError(f"{source} is not valid JSON: {exc}") from exc
        return parse_view_definition(_obj(raw, "$"))
    return parse_view_definition(_obj(source, "$"))
