"""What ``ehrsync sync`` shows: one line per resource type as its step ends, then a table of the whole run.

Dagster's own console log (about 230 DEBUG lines per run) answers how the run executed; an operator asks what it
did per resource type. The lines come from the run's events as they are stored (the listener ``run_sync_now``
accepts), the table from the materialization metadata the run returns, so both say what the UI shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterEventType, EventLogEntry

from auth_service.core.redaction import redact

__all__ = ["SyncProgress", "TypeRow", "summary_lines", "type_rows"]

_COUNTS = ("fetched", "created", "updated", "unchanged", "quarantined")
_HEADER = ("type", *_COUNTS, "note")
_STEP_GROUPS = ("landing", "warehouse", "bulk")
_QUALIFIED = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)+([A-Za-z_]\w*: )")  # an exception's module path


@dataclass
class TypeRow:
    """One resource type of a run: what was read, what the warehouse stored, and why it stopped if it did."""

    resource_type: str
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    note: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.resource_type, *(str(getattr(self, name)) for name in _COUNTS), self.note)


def _int(meta: Mapping[str, Any], name: str) -> int:
    value = meta.get(name)
    return int(value) if isinstance(value, int | float) else 0


def _note(meta: Mapping[str, Any]) -> str:
    if meta.get("skipped_reason"):
        return f"skipped: {meta['skipped_reason']}"
    if meta.get("incomplete"):
        return "incomplete search"
    return ""


def _step_type(step_key: str) -> str | None:
    """``landing__Observation`` → ``Observation``: the resource type a step handles (None for shared steps)."""
    group, _, rest = step_key.partition("__")
    return rest if group in _STEP_GROUPS and rest and group != "bulk" else None


def type_rows(materializations: Mapping[str, Mapping[str, Any]], step_errors: Mapping[str, str]) -> list[TypeRow]:
    """Rows by type from a run's ``{asset key: metadata}`` (REST: landing/T + warehouse/T; Bulk: per_type) and
    ``{step key: why it failed}``; a failed step shared by several types (references, bulk) gets a row of its own."""
    rows: dict[str, TypeRow] = {}
    for asset, meta in materializations.items():
        group, _, rtype = asset.partition("/")
        if group == "bulk":
            for bulk_type, counts in dict(meta.get("per_type") or {}).items():
                row = rows.setdefault(bulk_type, TypeRow(bulk_type))
                for name in _COUNTS:
                    setattr(row, name, _int(counts, name))
                row.note = row.note or _note(counts)
            continue
        row = rows.setdefault(rtype, TypeRow(rtype))
        if group == "landing":
            row.fetched, row.quarantined = _int(meta, "fetched"), _int(meta, "quarantined")
        elif group == "warehouse":
            row.created, row.updated, row.unchanged = (_int(meta, n) for n in ("created", "updated", "unchanged"))
        row.note = row.note or _note(meta)
    for step_key, error in step_errors.items():
        name = _step_type(step_key) or step_key
        rows.setdefault(name, TypeRow(name)).note = f"failed: {_one_line(error)}"
    return sorted(rows.values(), key=lambda r: r.resource_type)


def _one_line(error: str) -> str:
    """``connectors.errors.base.StepBudgetExceededError: landing ...`` → ``StepBudgetExceededError: landing ...``."""
    return redact(_QUALIFIED.sub(r"\1", " ".join(error.split())))[:200]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, len(widths) - 1) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*row).rstrip() for row in rows]


def summary_lines(
    rows: list[TypeRow], *, run_id: str, job_name: str, success: bool, failed_steps: tuple[str, ...] = ()
) -> list[str]:
    """The table (one row per type, then the totals) and the run's id and status."""
    totals = TypeRow("total")
    for row in rows:
        for name in _COUNTS:
            setattr(totals, name, getattr(totals, name) + getattr(row, name))
    lines = _table([_HEADER, *(r.cells() for r in rows), totals.cells()])
    rule = "-" * max(len(line) for line in lines)
    lines = [lines[0], rule, *lines[1:-1], rule, lines[-1]]
    status = "succeeded" if success else f"failed (steps: {', '.join(failed_steps) or 'none'})"
    lines.append(f"run {run_id} ({job_name}) {status}")
    return lines


class SyncProgress:
    """The run's event listener: a line when the run starts, per resource type as its upsert ends, per failed step."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo
        self._landed: dict[str, Mapping[str, Any]] = {}

    def __call__(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None:
            return
        if event.event_type == DagsterEventType.RUN_START:
            self._echo(f"run {entry.run_id} ({entry.job_name}) started")
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            self._materialized(mat.asset_key.to_user_string(), {k: v.value for k, v in mat.metadata.items()})
        elif event.event_type == DagsterEventType.STEP_FAILURE and event.step_key:
            group = event.step_key.partition("__")[0]
            self._echo(f"  {_step_type(event.step_key) or event.step_key}: {group} step failed (see the table)")

    def _materialized(self, asset: str, meta: Mapping[str, Any]) -> None:
        group, _, rtype = asset.partition("/")
        if group == "landing":
            self._landed[rtype] = meta
        elif group == "warehouse":
            landed = self._landed.get(rtype, {})
            self._echo(f"  {_progress_line(type_rows({f'landing/{rtype}': landed, asset: meta}, {})[0])}")
        elif group == "bulk":
            self._echo(f"  bulk export: {_int(meta, 'files')} file(s), {_int(meta, 'fetched')} resources fetched")


def _progress_line(row: TypeRow) -> str:
    if row.note:
        return f"{row.resource_type}: {row.note}"
    return (
        f"{row.resource_type}: {row.fetched} fetched, {row.created} created, {row.updated} updated, "
        f"{row.unchanged} unchanged, {row.quarantined} quarantined"
    )
