"""A connection's own run (not a batch's) and its source's throttle: noting the time the source named, and not
sending requests before it (vendors.md §4, BDX-10).

A batch member stopped by a source-wide throttle notes ``not_before`` on its row and defers the later members
(``engine.batch_defer``); a connection synced alone by its own ``incremental_sync`` run meets the same throttle in
one of its per-type steps. That step notes the time on the run's row (:func:`note_source_throttle`), so the
scheduler asks for nothing before it (``engine.retries.source_holds``), and each later step of the run, or of a
retry Dagster starts at once (its automatic run retries), finds the hold (:func:`held_until`) and sends nothing: it
would only be refused again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from engine import runs
from engine.batch_defer import SourceThrottle, source_origins, source_throttle
from engine.runs import SyncRunRecord
from store import AppDatabase

__all__ = ["held_until", "newest_row", "note_source_throttle"]


def newest_row(db: AppDatabase, row_ids: Sequence[str]) -> SyncRunRecord | None:
    """The first of ``row_ids`` (newest first) that has a ``sync_runs`` row."""
    return next((r for r in (runs.get(db, rid) for rid in row_ids) if r is not None), None)


def held_until(db: AppDatabase, row_ids: Sequence[str], at: datetime) -> datetime | None:
    """The time the newest of ``row_ids`` (a run's own row, then those of the runs it carries on, newest first)
    noted its source said to come back, when that is after ``at``; None: nothing holds the connection."""
    newest = newest_row(db, row_ids)
    until = None if newest is None else newest.not_before
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return until if until is not None and until > at else None


def note_source_throttle(db: AppDatabase, run_id: str, connection_id: str, exc: BaseException) -> SourceThrottle | None:
    """When ``exc`` (a step's failure) holds for the connection's whole source (``engine.batch_defer``: a throttle,
    a spent quota, an unreachable host), note its time on the run's row; returns it (None: the step's own)."""
    throttle = source_throttle(exc, connection_id, origins=source_origins(db, connection_id))
    if throttle is not None and runs.get(db, run_id) is not None:
        runs.hold_until(db, run_id, throttle.until)
    return throttle
