"""``draft_note_outbox``: the write-back outbox as analysts see it, metadata only (issue 13).

The outbox lives in the app database (``store.outbox``), which analysts do not query; the write-back run copies
each note's state here after every attempt, so "how many notes were written, blocked, failed, per connection
and vendor, how many attempts" is a warehouse query. The note's text and title (PHI) are never copied: the
column list below is the whole contract, and a row carrying another key is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from warehouse.errors import InvalidInputError
from warehouse.merge import Warehouse

__all__ = [
    "NOTE_OUTBOX_COLUMNS",
    "NOTE_OUTBOX_TABLE",
    "ensure_note_outbox_table",
    "read_note_outbox",
    "replace_note_outbox",
]

NOTE_OUTBOX_TABLE = "draft_note_outbox"
NOTE_OUTBOX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "TEXT PRIMARY KEY"),
    ("tenant_id", "TEXT"),
    ("connection_id", "TEXT"),
    ("draft_id", "TEXT"),
    ("loinc_code", "TEXT"),
    ("content_type", "TEXT"),
    ("body_bytes", "BIGINT"),
    ("produced_by", "TEXT"),
    ("doc_status", "TEXT"),
    ("state", "TEXT"),
    ("version", "INTEGER"),
    ("attempts", "INTEGER"),
    ("last_http_status", "INTEGER"),
    ("reason_code", "TEXT"),
    ("ehr_resource_id", "TEXT"),
    ("ehr_version_id", "TEXT"),
    ("created_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ"),
)
_NAMES = tuple(name for name, _ in NOTE_OUTBOX_COLUMNS)


def _values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    extra = set(row) - set(_NAMES) - {"reason"}  # ``reason`` may echo the server's text: not copied either
    if extra:
        raise InvalidInputError(f"draft_note_outbox rows take only its columns; got {sorted(extra)}")
    return tuple(row.get(name) for name in _NAMES)


_CREATE = f"CREATE TABLE IF NOT EXISTS {NOTE_OUTBOX_TABLE} ({', '.join(f'{n} {k}' for n, k in NOTE_OUTBOX_COLUMNS)})"


def ensure_note_outbox_table(wh: Warehouse) -> None:
    """Create the (empty) table if no write-back run has yet, so the analyst snapshot always carries it."""
    with wh._write(NOTE_OUTBOX_TABLE) as cur:
        cur.execute(_CREATE)


def replace_note_outbox(wh: Warehouse, rows: Sequence[Mapping[str, Any]]) -> int:
    """Make the table hold exactly ``rows`` (one transaction: readers see the old copy or the new one)."""
    values = [_values(row) for row in rows]
    placeholders = ", ".join(["%s"] * len(_NAMES))
    with wh._write(NOTE_OUTBOX_TABLE) as cur:
        cur.execute(_CREATE)
        cur.execute(f"DELETE FROM {NOTE_OUTBOX_TABLE}")
        if values:
            cur.executemany(f"INSERT INTO {NOTE_OUTBOX_TABLE} ({', '.join(_NAMES)}) VALUES ({placeholders})", values)
    return len(values)


def read_note_outbox(wh: Warehouse) -> list[dict[str, Any]]:
    """Every row, by creation time (for checks and tests; analysts query the table directly)."""
    with wh._read() as cur:
        cur.execute(f"SELECT {', '.join(_NAMES)} FROM {NOTE_OUTBOX_TABLE} ORDER BY created_at, id")
        rows: list[dict[str, Any]] = []
        while batch := cur.fetchmany(1000):
            rows.extend(dict(zip(_NAMES, r, strict=True)) for r in batch)
        return rows
