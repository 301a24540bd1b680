"""The shape of the library code (issue 11): small modules and functions, no import cycle, layers that import
only downward.

Everything is read statically with ``ast``: imports inside functions and under ``TYPE_CHECKING`` count too, so a
lazy import cannot hide a cycle or an upward dependency. ``from pkg import sub`` where ``sub`` is a module counts
as importing that module; importing a package (or a name defined in it) counts as importing its ``__init__``.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (
    "connectors",
    "warehouse",
    "store",
    "engine",
    "auth_service",
    "pipelines",
    "sandbox",
    "ehrsync",
    "settings",
)
PACKAGES = tuple(p for p in CANDIDATES if (ROOT / p / "__init__.py").is_file())
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
FRAMEWORKS = ("dagster", "fastapi", "starlette")


@dataclass(frozen=True)
class Import:
    """One import statement's target inside our packages (``target``) or outside them (``external``)."""

    line: int
    target: str | None
    external: str | None


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.cache
def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the library packages (Alembic revisions excluded)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations/versions" in _rel(path):
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


@functools.cache
def _tree(name: str) -> ast.Module:
    path = _modules()[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _resolve(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is one of our modules (a package resolves to its ``__init__``)."""
    modules = _modules()
    while dotted and dotted not in modules:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _is_ours(dotted: str) -> bool:
    return dotted.split(".")[0] in PACKAGES


def _from_base(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from, relative imports resolved against ``name``."""
    if not node.level:
        return node.module or ""
    parts = name.split(".") if _modules()[name].name == "__init__.py" else name.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _targets(name: str, node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _from_base(name, node)
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in _modules() else base for a in node.names]
    return []


@functools.cache
def _imports(name: str) -> tuple[Import, ...]:
    out: list[Import] = []
    for node in ast.walk(_tree(name)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for dotted in _targets(name, node):
            if _is_ours(dotted):
                out.append(Import(node.lineno, _resolve(dotted), None))
            elif dotted:
                out.append(Import(node.lineno, None, dotted))
    return tuple(out)


def _edges() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}, self-imports left out."""
    graph: dict[str, dict[str, int]] = {}
    for name in _modules():
        targets: dict[str, int] = {}
        for imp in _imports(name):
            if imp.target is not None and imp.target != name:
                targets.setdefault(imp.target, imp.line)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_packages_are_found() -> None:
    assert {"connectors", "store", "engine", "pipelines", "sandbox"} <= set(PACKAGES)
    assert len(_modules()) > 100


def test_no_module_over_300_lines() -> None:
    offenders = []
    for path in _modules().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_rel(path)}: {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines (split them):\n" + "\n".join(sorted(offenders))


def test_no_function_over_60_lines() -> None:
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    offenders.append(f"{_rel(path)}:{node.lineno} {node.name}: {lines} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(sorted(offenders))


def test_no_import_cycle() -> None:
    graph = _edges()
    modules = _modules()
    reports = []
    for component in _cycles(graph):
        inside = set(component)
        ties = [
            f"  {_rel(modules[a])}:{line} imports {b}"
            for a in component
            for b, line in sorted(graph[a].items())
            if b in inside
        ]
        reports.append(f"cycle among {', '.join(component)}:\n" + "\n".join(ties))
    assert not reports, "import cycles (module-level, function-level and TYPE_CHECKING imports):\n" + "\n".join(reports)


@dataclass(frozen=True)
class Layer:
    """What one package may import: ``allowed`` of our packages (besides itself), none of ``frameworks``."""

    package: str
    allowed: frozenset[str]
    frameworks: tuple[str, ...] = ()


LAYERS = [
    Layer("connectors", frozenset(), FRAMEWORKS),
    Layer("settings", frozenset({"connectors"}), FRAMEWORKS),
    Layer("warehouse", frozenset({"connectors"}), FRAMEWORKS),
    Layer("store", frozenset({"connectors", "settings"}), FRAMEWORKS),
    Layer("engine", frozenset({"connectors", "settings", "store", "warehouse"}), FRAMEWORKS),
    Layer("auth_service", frozenset({"connectors", "settings", "store", "engine"})),
    Layer("pipelines", frozenset({"connectors", "settings", "store", "warehouse", "engine"}), ("fastapi", "starlette")),
    Layer("sandbox", frozenset()),
]


def _is_framework(dotted: str, frameworks: tuple[str, ...]) -> bool:
    """``dagster`` covers ``dagster_graphql``, ``dagster_webserver`` and the like."""
    top = dotted.split(".")[0]
    return any(top == f or top.startswith(f + "_") for f in frameworks)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.package)
def test_packages_import_only_downward(layer: Layer) -> None:
    assert layer.package in PACKAGES, f"the layering table names {layer.package}, which this checkout lacks"
    offenders = []
    for name, path in _modules().items():
        if name.split(".")[0] != layer.package:
            continue
        for imp in _imports(name):
            if imp.target is not None:
                top = imp.target.split(".")[0]
                if top != layer.package and top not in layer.allowed:
                    offenders.append(f"{_rel(path)}:{imp.line} imports {imp.target}")
            elif imp.external is not None and _is_framework(imp.external, layer.frameworks):
                offenders.append(f"{_rel(path)}:{imp.line} imports {imp.external}")
    allowed = ", ".join(sorted(layer.allowed)) or "none of our packages"
    frameworks = f"; no {', '.join(layer.frameworks)}" if layer.frameworks else ""
    assert not offenders, f"{layer.package} may import {allowed}{frameworks}:\n" + "\n".join(offenders)
