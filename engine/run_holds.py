"""A connection's own run (not a batch's) and its source's throttle: noting the time the source named, and not
sending requests before it (vendors.md §4, BDX-10).

A batch member stopped by a source-wide throttle notes ``not_before`` on its row and defers the later members
(``engine.batch_defer``); a connection synced alone by its own ``incremental_sync`` run meets the same throttle in
one of its per-type steps. That step notes the time on the run's row (:func:`note_source_throttle`), so the
scheduler asks for nothing before it (``engine.retries.source_holds``), and each later step of the run, or of a
retry Dagster starts at once (its automatic run retries), finds the hold (:func:`held_until`) and sends nothing: it
would only be refused again.

A deletion reconciliation run (``engine.reconcile_run``) has no ``sync_runs`` row of its own: it honours the hold
the connection's newest row notes (:func:`connection_held_until`, the one the scheduler reads) and notes the one
it meets on that row (:func:`note_connection_throttle`), so neither it nor the scheduler sends into a throttle the
source named.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from engine import runs
from engine.batch_defer import SourceThrottle, source_origins, source_throttle
from engine.runs import SyncRunRecord
from store import AppDatabase

__all__ = [
    "connection_held_until",
    "held_until",
    "newest_row",
    "note_connection_throttle",
    "note_hold",
    "note_source_throttle",
]


def newest_row(db: AppDatabase, row_ids: Sequence[str]) -> SyncRunRecord | None:
    """The first of ``row_ids`` (newest first) that has a ``sync_runs`` row."""
    return next((r for r in (runs.get(db, rid) for rid in row_ids) if r is not None), None)


def held_until(db: AppDatabase, row_ids: Sequence[str], at: datetime) -> datetime | None:
    """The time the newest of ``row_ids`` (a run's own row, then those of the runs it carries on, newest first)
    noted its source said to come back, when that is after ``at``; None: nothing holds the connection."""
    return _held(newest_row(db, row_ids), at)


def _held(newest: SyncRunRecord | None, at: datetime) -> datetime | None:
    until = None if newest is None else newest.not_before
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return until if until is not None and until > at else None


def _connection_newest(db: AppDatabase, connection_id: str) -> SyncRunRecord | None:
    return next(iter(runs.history(db, connection_id, limit=1)), None)


def connection_held_until(db: AppDatabase, connection_id: str, at: datetime) -> datetime | None:
    """The time the connection's newest run (whatever ran it) noted its source said to come back, when that is
    after ``at`` (what the scheduler honours, ``engine.retries.source_holds``); None: nothing holds it."""
    return _held(_connection_newest(db, connection_id), at)


def note_source_throttle(db: AppDatabase, run_id: str, connection_id: str, exc: BaseException) -> SourceThrottle | None:
    """When ``exc`` (a step's failure) holds for the connection's whole source (``engine.batch_defer``: a throttle,
    a spent quota, an unreachable host), note its time on the run's row; returns it (None: the step's own)."""
    throttle = source_throttle(exc, connection_id, origins=source_origins(db, connection_id))
    if throttle is not None:
        note_hold(db, run_id, throttle.until)
    return throttle


def note_hold(db: AppDatabase, run_id: str, until: datetime) -> None:
    """Note ``until`` as the run's ``not_before``, unless the row already holds it longer (a hold is never
    shortened: the source's longest word stands). A run without a row has nowhere to note it."""
    row = runs.get(db, run_id)
    if row is not None and _held(row, until) is None:
        runs.hold_until(db, run_id, until)


def note_connection_throttle(db: AppDatabase, connection_id: str, exc: BaseException) -> SourceThrottle | None:
    """As :func:`note_source_throttle`, for work without a row of its own (a reconcile): the time is noted on the
    connection's newest row, unless that already holds it longer; returns the throttle (None: ``exc`` is not
    one, or the connection has no row yet, nowhere to note it: no hold of it will end for the scheduler to see)."""
    newest = _connection_newest(db, connection_id)
    return None if newest is None else note_source_throttle(db, newest.id, connection_id, exc)
