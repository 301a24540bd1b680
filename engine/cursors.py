"""High-water marks and pending landings (``sync_cursors``).

A landing records what it wrote and the mark it observed as *pending*; only the upsert of that landing moves
the mark, in the same transaction that records the type's completion (BDX-27, BDX-14). A crash anywhere before
that commit leaves the old mark, so the rerun fetches the same changes again and idempotent upserts absorb them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.handoff import LandingHandoff
from engine.models import SyncCursor, utcnow
from store import AppDatabase
from store.upserts import conflict_insert

REST_STREAM = "rest"
# One row per connection holds references found by upserted types and not yet read (stream "refs", type "*").
REFS_STREAM = "refs"
# One row per connection names the full sync that last forgot its REST marks (stream "full", type "*"; ``begin_full``).
FULL_STREAM = "full"


def bulk_stream(level: str, group_id: str | None) -> str:
    return f"bulk:{level}:{group_id or ''}"


def bulk_type_key(types: list[str] | None) -> str:
    """Cursor key of an export's type set (BDX-14: the mark belongs to the connection, level, group and types)."""
    return ",".join(sorted(set(types))) if types else "*"


@dataclass(frozen=True)
class Pending:
    """A landing waiting for its upsert."""

    run_id: str
    mark: datetime | None
    handoff: LandingHandoff


def get_mark(db: AppDatabase, connection_id: str, stream: str, resource_type: str) -> datetime | None:
    with db.session() as session:
        row = session.get(SyncCursor, (connection_id, stream, resource_type))
        return row.high_water_mark if row is not None else None


def last_run_id(db: AppDatabase, connection_id: str, stream: str, resource_type: str) -> str | None:
    """The run whose upsert last completed this cursor."""
    with db.session() as session:
        row = session.get(SyncCursor, (connection_id, stream, resource_type))
        return row.last_run_id if row is not None else None


def _row(session: Session, connection_id: str, stream: str, resource_type: str) -> SyncCursor:
    """The cursor row, row-locked on PostgreSQL (``FOR UPDATE``) so concurrent read-modify-writes of it, such as
    two runs queueing references, serialize instead of losing one side (SQLite: the caller's write lock).

    A missing row is made with INSERT ... ON CONFLICT DO NOTHING, then read and locked: of two transactions making
    it at once (two first ``begin_full``s), the second waits for the first's commit and then locks the row it made.
    A plain insert failed on the primary key there (PostgreSQL)."""
    key = (connection_id, stream, resource_type)
    row = session.get(SyncCursor, key, with_for_update=True)
    insert = conflict_insert(session.get_bind().dialect.name, SyncCursor)
    values = {"connection_id": connection_id, "stream": stream, "resource_type": resource_type}
    while row is None:  # again only if a purge of the connection deleted the row another made, in between
        session.execute(insert.values(**values, updated_at=utcnow()).on_conflict_do_nothing())
        row = session.get(SyncCursor, key, with_for_update=True)
    return row


def set_pending(
    db: AppDatabase,
    connection_id: str,
    stream: str,
    resource_type: str,
    run_id: str,
    mark: datetime | None,
    handoff: LandingHandoff,
    *,
    searched_after: datetime | None = None,
) -> None:
    """Record a finished landing (replacing any older one never upserted: its data is refetched anyway).

    ``searched_after``: the stored mark the landing's search started from. Forgotten since (``begin_full`` from the
    run-status sensor, which holds no connection lock, while this search ran), the mark is not recorded: the
    search covered only what changed after the old mark, and its mark would end the full re-pull asked for."""
    with db.locked_session() as session:
        row = _row(session, connection_id, stream, resource_type)
        if searched_after is not None and row.high_water_mark is None:
            mark = None
        row.pending_run_id = run_id
        row.pending_mark = mark
        row.pending = handoff.to_json()
        row.updated_at = utcnow()
        session.commit()


def get_pending(db: AppDatabase, connection_id: str, stream: str, resource_type: str) -> Pending | None:
    """The landing waiting for its upsert; ``HandoffError`` when its stored handoff is unreadable."""
    with db.session() as session:
        row = session.get(SyncCursor, (connection_id, stream, resource_type))
        if row is None or row.pending_run_id is None:
            return None
        return Pending(row.pending_run_id, row.pending_mark, LandingHandoff.from_json(row.pending or {}))


def advance(
    session: Session,
    connection_id: str,
    stream: str,
    resource_type: str,
    run_id: str,
    mark: datetime | None,
) -> None:
    """Store the new mark and clear the pending landing, inside the caller's transaction.

    A ``None`` mark (the server sent neither ``meta.lastUpdated`` nor ``Date``) keeps the old one: the next run
    then refetches from there, which costs bandwidth but never loses a change. A REST mark stored spends a full
    run's owed search of the type (``begin_full``): only a whole search stores one while it is owed. The marker row
    is locked before the type's row, the order ``begin_full`` takes them in (PostgreSQL: else a deadlock).
    """
    if mark is not None and stream == REST_STREAM:  # a whole search of an owed type upserted: its intent is spent
        _spend(session, connection_id, resource_type)
    row = _row(session, connection_id, stream, resource_type)
    if mark is not None:
        row.high_water_mark = mark
    row.last_run_id = run_id
    row.pending_run_id = None
    row.pending_mark = None
    row.pending = None
    row.updated_at = utcnow()


def complete_landing(
    session: Session, connection_id: str, resource_type: str, run_id: str, landed_by: str
) -> datetime | None:
    """``advance`` a REST type past the landing of run ``landed_by`` just upserted; returns the mark stored.

    The mark is the one the row holds under this transaction's lock, not the one read before the files were
    merged: what forgets marks holds no connection lock (``begin_full`` from the run-status sensor, ``clear_mark``
    from a reconciliation, a widened grant), and a mark it forgot meanwhile, stored again, would spend the full
    run's owed search of the type (the full re-pull asked for never happening) or skip what was missed. A landing
    of another run that replaced this one is left for its own upsert: its files were not merged here."""
    _marker(session, connection_id)  # the order ``begin_full`` locks in: the marker row, then the type's
    row = _row(session, connection_id, REST_STREAM, resource_type)
    if row.pending_run_id != landed_by:
        row.last_run_id = run_id
        row.updated_at = utcnow()
        return None
    mark = row.pending_mark
    advance(session, connection_id, REST_STREAM, resource_type, run_id, mark)
    return mark


def clear_mark(db: AppDatabase, connection_id: str, stream: str, resource_type: str) -> None:
    """Forget one type's mark (its next run searches everything): a full run that missed data must not leave
    an older mark behind, since what it missed may be older than that mark. A landing still waiting for its upsert
    loses its mark too (its files still merge): its upsert (another lock hold, maybe a retry hours later) would
    otherwise store that mark, as far past what was missed as the one forgotten (a reconciliation between a sync's
    landing and upsert steps)."""
    with db.locked_session() as session:
        row = session.get(SyncCursor, (connection_id, stream, resource_type), with_for_update=True)
        if row is not None and (row.high_water_mark is not None or row.pending_mark is not None):
            forget_marks(row)
            session.commit()


def begin_full(
    db: AppDatabase, connection_id: str, run_id: str, types: Sequence[str], earlier_runs: Sequence[str] = ()
) -> bool:
    """Record a full sync's intent durably, once per run: forget the REST marks of ``types`` (the types the run was
    asked for; a landing waiting for its upsert loses its mark too; the other types keep theirs), so each is searched
    in full by whichever run syncs it next (this one, its retry, the next scheduled or batch run) until a search of
    the whole type is upserted, which stores a mark again. Kept only in the run's own steps, a full run that failed
    part-way left the types it had not finished at their old marks, and its retry, incremental, never fetched what
    lay before them. The marker also names the types still owed (``owes_full``: the run that searches one is a full
    run) and owes a re-read of the queued references (``owes_reference_refresh``). ``earlier_runs``: the runs a
    re-execution carries on (their intent is recorded already). Returns whether marks were forgotten."""
    with db.locked_session() as session:
        marker = _row(session, connection_id, FULL_STREAM, "*")
        intent = dict(marker.pending or {})
        if intent.get("run_id") in (run_id, *earlier_runs):
            return False
        owed = sorted(set(intent.get("owed", [])) | set(types))  # an earlier full run's unfinished types stay owed
        marker.pending = {"run_id": run_id, "owed": owed, "refs": True}
        marker.updated_at = utcnow()
        rows = session.scalars(
            select(SyncCursor).where(
                SyncCursor.connection_id == connection_id,
                SyncCursor.stream == REST_STREAM,
                SyncCursor.resource_type.in_(list(types)),
            )
        ).all()
        for row in rows:
            forget_marks(row)
        session.commit()
    return True


def _intent(db: AppDatabase, connection_id: str) -> dict[str, Any]:
    with db.session() as session:
        marker = session.get(SyncCursor, (connection_id, FULL_STREAM, "*"))
        return dict(marker.pending or {}) if marker is not None else {}


def owes_full(db: AppDatabase, connection_id: str, resource_type: str) -> bool:
    """Whether a full run's search of the whole type is still owed (``begin_full``; spent by ``advance``)."""
    return resource_type in _intent(db, connection_id).get("owed", [])


def owes_reference_refresh(db: AppDatabase, connection_id: str) -> bool:
    """Whether a full run's re-read of the queued references (stored or not) is still owed."""
    return bool(_intent(db, connection_id).get("refs"))


def _spend(session: Session, connection_id: str, resource_type: str | None) -> None:
    """Mark a full run's owed search of ``resource_type`` done (None: its reference re-read), in the caller's
    transaction."""
    marker = _marker(session, connection_id)
    if marker is None:
        return
    intent = dict(marker.pending or {})
    owed = [t for t in intent.get("owed", []) if t != resource_type]
    refs = bool(intent.get("refs")) and resource_type is not None
    if owed != intent.get("owed", []) or refs != bool(intent.get("refs")):
        marker.pending = {**intent, "owed": owed, "refs": refs}
        marker.updated_at = utcnow()


def _marker(session: Session, connection_id: str) -> SyncCursor | None:
    """The connection's full-run marker row (``begin_full``), row-locked on PostgreSQL."""
    return session.get(SyncCursor, (connection_id, FULL_STREAM, "*"), with_for_update=True)


def reference_refresh_done(db: AppDatabase, connection_id: str) -> None:
    """Spend the owed re-read of references: every queued one was read again (or none was queued)."""
    with db.locked_session() as session:
        _spend(session, connection_id, None)
        session.commit()


def forget_marks(row: SyncCursor) -> None:
    """Forget ``row``'s mark and a waiting landing's (in the caller's transaction): its type is searched whole."""
    row.high_water_mark = row.pending_mark = None
    row.updated_at = utcnow()


def get_data(db: AppDatabase, connection_id: str, stream: str, key: str) -> dict[str, Any] | None:
    """The JSON state a stream keeps in its cursor row (e.g. a group's known members, BDX-15)."""
    with db.session() as session:
        row = session.get(SyncCursor, (connection_id, stream, key))
        return dict(row.pending) if row is not None and row.pending is not None else None


def put_data(session: Session, connection_id: str, stream: str, key: str, data: dict[str, Any]) -> None:
    """Replace that JSON state inside the caller's transaction (committed with the step that earned it)."""
    row = _row(session, connection_id, stream, key)
    row.pending = data
    row.updated_at = utcnow()


def add_references(session: Session, connection_id: str, references: list[str]) -> None:
    """Queue references for reading, inside the transaction that completes the type that found them.

    Durable so a crash between a type's upsert and the reference step cannot lose them: the next run reads
    what is still queued even though an incremental search no longer returns the resources that point there.
    """
    if not references:
        return
    row = _row(session, connection_id, REFS_STREAM, "*")
    queued = set((row.pending or {}).get("refs", []))
    row.pending = {"refs": sorted(queued | set(references))}
    row.updated_at = utcnow()


def queued_references(db: AppDatabase, connection_id: str) -> list[str]:
    with db.session() as session:
        row = session.get(SyncCursor, (connection_id, REFS_STREAM, "*"))
        return list((row.pending or {}).get("refs", [])) if row is not None else []


def dequeue_references(db: AppDatabase, connection_id: str, done: set[str]) -> None:
    """Forget references that were read (or are gone upstream); the rest stay queued for the next run."""
    with db.locked_session() as session:
        row = session.get(SyncCursor, (connection_id, REFS_STREAM, "*"), with_for_update=True)
        if row is None:
            return
        row.pending = {"refs": sorted(set((row.pending or {}).get("refs", [])) - done)}
        row.updated_at = utcnow()
        session.commit()
