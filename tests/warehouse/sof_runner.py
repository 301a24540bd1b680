"""Runs the official SQL-on-FHIR v2 test cases (tests/warehouse/sof_spec/) through warehouse.sof on a database.

Each test file's resources go into a temporary ``fhir_resources``-shaped table (plus a tombstoned copy of each,
which the compiled view must not return); every case is compiled for the backend, executed, and its rows compared
with ``expect`` order-insensitively (column order too when the case gives ``expectColumns``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warehouse._sql import Dialect
from warehouse.sof import ViewDefinitionError, compile_view, load_view_definition

SPEC = Path(__file__).resolve().parent / "sof_spec"
UNSUPPORTED = SPEC / "unsupported.json"
BACKENDS = ("duckdb", "postgres")
PROVENANCE = "connection_id"

# (sql) -> (column names, rows); the backend's own errors propagate.
Execute = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]


@dataclass(frozen=True)
class Case:
    group: str  # the test file, without .json
    title: str
    view: Any
    expect: list[dict[str, Any]] | None  # None: the case expects an error
    columns: list[str] | None

    @property
    def key(self) -> str:
        return f"{self.group}::{self.title}"


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str  # why it failed, or for an expected error which kind was raised


def load_suite() -> list[tuple[str, list[dict[str, Any]], list[Case]]]:
    """(group, resources, cases) per vendored file, in file name order."""
    suite = []
    for path in sorted(SPEC.glob("*.json")):
        if path == UNSUPPORTED:
            continue
        data = json.loads(path.read_text())
        group, cases, seen = path.stem, [], set()
        for test in data["tests"]:
            title = test["title"]
            while title in seen:  # keep keys unique if a file repeats a title
                title += " (again)"
            seen.add(title)
            errors = "expectError" in test or "error" in test or "expect" not in test
            cases.append(
                Case(group, title, test["view"], None if errors else test["expect"], test.get("expectColumns"))
            )
        suite.append((group, data["resources"], cases))
    return suite


def load_unsupported() -> dict[str, dict[str, Any]]:
    return dict(json.loads(UNSUPPORTED.read_text())["cases"])


def expected_failures(backend: str) -> dict[str, str]:
    """case key -> reason, for the cases the unsupported list names for ``backend``."""
    return {k: v["reason"] for k, v in load_unsupported().items() if backend in v["backends"]}


def table_rows(resources: Sequence[dict[str, Any]]) -> Iterator[tuple[str, str, str, bool, str]]:
    """(connection_id, resource_type, id, deleted, resource JSON): each resource live, and a tombstoned copy."""
    for i, res in enumerate(resources):
        rid = res.get("id", f"noid{i}")
        text = json.dumps(res)
        yield "c1", res["resourceType"], rid, False, text
        yield "c1", res["resourceType"], f"{rid}-deleted", True, text


def _normal(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _canon(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps({k: _normal(v) for k, v in row.items()}, sort_keys=True) for row in rows)


def run_case(case: Case, dialect: Dialect, table: str, execute: Execute) -> Outcome:
    """Compile, run and compare one case. DuckDB hands JSON columns back as text, psycopg decodes ``jsonb``."""
    try:
        compiled = compile_view(load_view_definition(case.view), dialect, source=table, extra_columns=(PROVENANCE,))
    except ViewDefinitionError as exc:
        return Outcome(case.expect is None, f"ViewDefinitionError: {exc.problem}")
    try:
        names, raw = execute(compiled.sql)
    except Exception as exc:  # the database's own error type: duckdb.Error, psycopg.Error
        return Outcome(case.expect is None, f"SQL error: {type(exc).__name__}")
    if case.expect is None:
        return Outcome(False, "expected an error, got rows")
    rows = []
    for values in raw:
        row = dict(zip(names, values, strict=True))
        if row.pop(PROVENANCE) != "c1":
            return Outcome(False, "pass-through column lost its value")
        for name in compiled.json_columns:
            if dialect.name == "duckdb" and row[name] is not None:
                row[name] = json.loads(row[name])
        rows.append(row)
    if case.columns is not None and names[1:] != case.columns:
        return Outcome(False, f"columns {names[1:]} != {case.columns}")
    if _canon(rows) != _canon(case.expect):
        return Outcome(False, f"rows differ: got {_canon(rows)}")
    return Outcome(True, "rows match")


def mismatches(results: dict[str, Outcome], backend: str) -> list[str]:
    """Cases whose outcome disagrees with the unsupported list: unexpected failures and listed cases that pass."""
    listed = expected_failures(backend)
    out = [f"{key}: {o.detail}" for key, o in results.items() if not o.passed and key not in listed]
    out += [
        f"{key}: passes now, remove it from unsupported.json"
        for key, o in results.items()
        if o.passed and key in listed
    ]
    out += [f"{key}: listed in unsupported.json but no such case" for key in listed if key not in results]
    return out


def doc_block() -> str:
    """The conformance table docs/SQL_ON_FHIR.md must contain, derived from the suite and the unsupported list
    (which the runner keeps true on each backend)."""
    failing = {b: expected_failures(b) for b in BACKENDS}
    lines = ["| group (test file) | cases | DuckDB passes | PostgreSQL passes |", "|---|---:|---:|---:|"]
    totals = [0, 0, 0]
    for group, _, cases in load_suite():
        passes = [sum(1 for c in cases if c.key not in failing[b]) for b in BACKENDS]
        lines.append(f"| {group} | {len(cases)} | {passes[0]} | {passes[1]} |")
        totals = [totals[0] + len(cases), totals[1] + passes[0], totals[2] + passes[1]]
    lines.append(f"| **total** | **{totals[0]}** | **{totals[1]}** | **{totals[2]}** |")
    lines += ["", "| failing case (sof_spec/unsupported.json) | backends | reason |", "|---|---|---|"]
    for key, entry in sorted(load_unsupported().items()):
        lines.append(f"| {key} | {', '.join(entry['backends'])} | {entry['reason']} |")
    return "\n".join(lines)
