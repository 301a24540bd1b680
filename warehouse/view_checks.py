"""Referential checks over the analyst views: every clinical row points at a patient the warehouse holds.

A row whose subject is absent, or names a patient not synced for the same connection, is a row an analyst's
``JOIN patient`` silently drops. The check counts both and names a few resource ids (ids only: no PHI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warehouse.errors import InvalidInputError
from warehouse.merge import Warehouse

__all__ = ["EXAMPLE_IDS", "PatientReferences", "patient_references"]

EXAMPLE_IDS = 5
_NAME = re.compile(r"^[a-z_][a-z0-9_]*\Z")


@dataclass(frozen=True)
class PatientReferences:
    """Rows of ``view``; ``missing``: no patient reference; ``dangling``: a patient not in the same connection."""

    view: str
    rows: int
    missing: int
    dangling: int
    examples: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.dangling == 0


def patient_references(wh: Warehouse, view: str, *, patient_view: str = "patient") -> PatientReferences:
    """Count ``view`` rows whose ``patient_id`` is NULL or not an ``id`` of ``patient_view`` for the same
    ``connection_id``, with up to ``EXAMPLE_IDS`` of their resource ids (sorted, so a rerun names the same)."""
    if not (_NAME.match(view) and _NAME.match(patient_view)):
        raise InvalidInputError(f"view names must be lower-case SQL identifiers, got {view!r}, {patient_view!r}")
    joined = (
        f'FROM "{view}" v LEFT JOIN (SELECT DISTINCT connection_id, id FROM "{patient_view}") p '
        "ON p.connection_id = v.connection_id AND p.id = v.patient_id"
    )
    with wh._read() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE v.patient_id IS NULL), "
            f"count(*) FILTER (WHERE v.patient_id IS NOT NULL AND p.id IS NULL) {joined}"
        )
        row = cur.fetchone()
        cur.execute(f"SELECT v.id {joined} WHERE p.id IS NULL ORDER BY v.id LIMIT {EXAMPLE_IDS}")
        examples = tuple(str(r[0]) for r in cur.fetchmany(EXAMPLE_IDS))
    rows, missing, dangling = (int(v) for v in row) if row else (0, 0, 0)
    return PatientReferences(view, rows, missing, dangling, examples)
