"""Reads of the whole outbox for dashboards and the warehouse: counts per state and every note's metadata (never a
note's body or title, which are PHI)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from store.database import AppDatabase
from store.models import NoteOutbox
from store.outbox import METADATA_COLUMNS, STATES

__all__ = ["outbox_counts", "outbox_metadata_rows"]


def outbox_counts(db: AppDatabase) -> dict[str, int]:
    """Notes per state (every state present, zero when none)."""
    with db.session() as session:
        rows = session.execute(select(NoteOutbox.state, func.count()).group_by(NoteOutbox.state)).all()
    found = {str(state): int(count) for state, count in rows}
    return {state: found.get(state, 0) for state in STATES}


def outbox_metadata_rows(db: AppDatabase) -> list[dict[str, Any]]:
    """Every note's metadata (no body, no title), for the warehouse's ``draft_note_outbox`` table."""
    columns = [getattr(NoteOutbox, name) for name in METADATA_COLUMNS]
    with db.session() as session:
        rows = session.execute(select(*columns).order_by(NoteOutbox.created_at, NoteOutbox.id)).all()
    return [dict(zip(METADATA_COLUMNS, row, strict=True)) for row in rows]
