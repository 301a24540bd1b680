"""Which notes need a write-back run now, and what each run is called (Dagster-free; the sensor asks this).

A run is named by the note and its version (``run_key``): a note retried later has a new version, so a new run;
the same pending note seen by two ticks is one run. The cursor is the due time of the newest note requested;
each tick looks back ``LOOKBACK`` before it, so a note committed late (its due time older than the cursor) is
still found, and the run key keeps the overlap from asking twice. Notes left in ``sending`` by a dead run are
asked for again once they are ``stalled_after_s`` old, and once more every further ``stalled_after_s`` they stay
there (a live run keeps its note fresh, ``heartbeat``, so only a dead run's note looks stalled): a resumed run
that could not move the note (EHR unreachable, killed again) leaves its version unchanged,
and Dagster never runs a run key twice, so the resume number (``:r<n>``) is what lets a later tick try again. A
pending note still pending a stalled period after its due time (its run died before moving it) is asked for the
same way. A run whose note has moved past the version it was asked for leaves it alone (``write_note``).

A note waiting for its connection (``pending``, reason ``connection_<status>``: re-authorization, an admin's retry)
is not asked for while the connection stays so, and is asked for on the first tick once it is ``active`` again,
however long it waited (``store.outbox_queue.woken_notes``). A note the EHR accepted (202) without saying how it
ended is asked for again when its next identifier search is due (``accepted``). Notes of active connections are read
first, so notes that cannot be sent now never fill the ``limit`` rows of a query before them. A ``written`` note whose
Provenance is owed and due (DWB-82: its run was killed before sending it, or the EHR could not take it) is asked for
too, at most ``limit`` a tick, each run sending one Provenance at most (``provenance_due``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from engine.writeback.accepted import ACCEPTED
from store import AppDatabase
from store.models import Connection
from store.outbox import NoteRecord
from store.outbox_queue import due_notes, provenance_owed, stalled_notes, unknown_due, woken_notes

__all__ = ["LOOKBACK", "NoteRun", "due_runs"]

LOOKBACK = timedelta(minutes=10)


@dataclass(frozen=True)
class NoteRun:
    """One write-back run to request: the note (id, version) and what its tags say (connection, tenant, source)."""

    note_id: str
    version: int
    connection_id: str
    tenant_id: str
    source: str
    resume: int = 0  # n-th stalled period of a note left in ``sending`` (0: a pending note)

    @property
    def run_key(self) -> str:
        base = f"note:{self.note_id}:v{self.version}"
        return f"{base}:r{self.resume}" if self.resume else base


def _resume(note: NoteRecord, now: datetime, stalled_after_s: float) -> int:
    """Stalled periods the note has waited: since its last move (``sending``), its due time (``pending``) or its
    Provenance's (``written``: a run killed before its claim moved the note is asked for again a period later)."""
    since = note.updated_at if note.state == "sending" else note.next_attempt_at
    if note.state == "written" and note.provenance_due_at is not None:
        since = note.provenance_due_at
    periods = int((now - since).total_seconds() // max(stalled_after_s, 1.0))
    return max(1, periods) if note.state == "sending" else max(0, periods)


def _sources(db: AppDatabase, connection_ids: set[str]) -> dict[str, str]:
    if not connection_ids:
        return {}
    with db.session() as session:
        rows = session.execute(select(Connection.id, Connection.provider_id).where(Connection.id.in_(connection_ids)))
        return {str(cid): str(provider) for cid, provider in rows}


def due_runs(
    db: AppDatabase, now: datetime, *, after: datetime | None, stalled_after_s: float, limit: int = 100
) -> tuple[list[NoteRun], datetime | None]:
    """The runs to request now and the new cursor (the newest due time requested, never moving back)."""
    pending = due_notes(db, now, since=after - LOOKBACK if after else None, limit=limit)
    stalled_before = now - timedelta(seconds=stalled_after_s)
    stalled = stalled_notes(db, stalled_before, limit=limit)
    seen = {n.id for n in pending}
    woken = [n for n in woken_notes(db, now, limit=limit) if n.id not in seen]  # their connection is active again
    seen |= {n.id for n in woken}  # pending notes whose run died before moving them (outside the lookback too)
    overdue = [n for n in due_notes(db, stalled_before, limit=limit) if n.id not in seen]
    seen |= {n.id for n in overdue}  # an accepted (202) note due for its next identifier search
    rechecks = [n for n in unknown_due(db, now, ACCEPTED, limit=limit) if n.id not in seen]
    owed = provenance_owed(db, now, limit=limit)  # DWB-82: written, its Provenance never sent (written notes only)
    notes: list[NoteRecord] = [*pending, *woken, *overdue, *stalled, *rechecks, *owed]
    sources = _sources(db, {n.connection_id for n in notes})
    runs = [
        NoteRun(
            n.id,
            n.version,
            n.connection_id,
            n.tenant_id,
            sources.get(n.connection_id, ""),
            _resume(n, now, stalled_after_s),
        )
        for n in notes
    ]
    newest = max((n.next_attempt_at for n in pending), default=None)
    cursor = max(newest, after) if newest and after else (newest or after)
    return runs, cursor
