"""Which outbox notes a write-back run could move now: the sensor's reads (``engine.writeback.queue`` asks these).

A note whose connection cannot write (``needs_reauth``, ``client_rejected``, ``token_undecryptable``) and whose POST
may already be stored waits for it: ``pending`` with the reason code ``connection_<status>`` (``waiting_code``). Such
a note is skipped while its connection is still in that state (no run every stalled period, and never one of the
``limit`` rows), and read again by ``woken_notes`` as soon as the connection is ``active`` again. A note of a
connection in another state than the one it waits on (or a note not yet marked waiting) is read, so one run settles
it; notes of ``active`` connections always come first, so no number of notes of other connections fills the rows
before them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, case, func, literal, not_, select

from store.database import AppDatabase
from store.models import Connection, ConnectionStatus, NoteOutbox
from store.outbox import NoteRecord

__all__ = ["WAIT_STATUSES", "due_notes", "provenance_owed", "stalled_notes", "waiting_code", "woken_notes"]

#: Connection states a note that may be stored waits out (the same connection can be ``active`` again: an admin's
#: retry, a re-authorization of a backend client, a restored token). ``disabled``/``disconnected`` do not wait.
WAIT_STATUSES = (
    ConnectionStatus.NEEDS_REAUTH,
    ConnectionStatus.CLIENT_REJECTED,
    ConnectionStatus.TOKEN_UNDECRYPTABLE,
)
_PREFIX = "connection_"


def waiting_code(status: str) -> str:
    """The reason code of a ``pending`` note waiting for its connection, e.g. ``connection_needs_reauth``."""
    return f"{_PREFIX}{status}"


_WAIT_CODES = tuple(waiting_code(s) for s in WAIT_STATUSES)
_INACTIVE_LAST = case((Connection.status == ConnectionStatus.ACTIVE, 0), else_=1)
#: A note still waiting for its connection: skipped until the connection is active (or in another state) again.
_WAITING = and_(
    NoteOutbox.state == "pending",
    Connection.status != ConnectionStatus.ACTIVE,
    func.coalesce(NoteOutbox.reason_code, "") == literal(_PREFIX, String) + Connection.status,
)


def _movable(query: Any) -> Any:
    return query.join(Connection, Connection.id == NoteOutbox.connection_id).where(not_(_WAITING))


def due_notes(db: AppDatabase, now: datetime, *, since: datetime | None = None, limit: int = 100) -> list[NoteRecord]:
    """Pending notes whose time has come (due at or after ``since`` when given): those of active connections first,
    then oldest due first; notes waiting for their connection are left out."""
    query = _movable(select(NoteOutbox)).where(NoteOutbox.state == "pending", NoteOutbox.next_attempt_at <= now)
    if since is not None:
        query = query.where(NoteOutbox.next_attempt_at >= since)
    order = (_INACTIVE_LAST, NoteOutbox.next_attempt_at, NoteOutbox.id)
    with db.session() as session:
        return [NoteRecord.of(r) for r in session.scalars(query.order_by(*order).limit(limit))]


def stalled_notes(db: AppDatabase, before: datetime, *, limit: int = 100) -> list[NoteRecord]:
    """Notes left in ``sending`` since before ``before`` (their run died mid-attempt and must be resumed): those of
    active connections first, then the longest left."""
    query = _movable(select(NoteOutbox)).where(NoteOutbox.state == "sending", NoteOutbox.updated_at < before)
    order = (_INACTIVE_LAST, NoteOutbox.updated_at, NoteOutbox.id)
    with db.session() as session:
        return [NoteRecord.of(r) for r in session.scalars(query.order_by(*order).limit(limit))]


def woken_notes(db: AppDatabase, now: datetime, *, limit: int = 100) -> list[NoteRecord]:
    """Notes that waited for their connection, which is ``active`` again: due now, however long they waited."""
    query = (
        select(NoteOutbox)
        .join(Connection, Connection.id == NoteOutbox.connection_id)
        .where(
            NoteOutbox.state == "pending",
            NoteOutbox.next_attempt_at <= now,
            NoteOutbox.reason_code.in_(_WAIT_CODES),
            Connection.status == ConnectionStatus.ACTIVE,
        )
        .order_by(NoteOutbox.next_attempt_at, NoteOutbox.id)
        .limit(limit)
    )
    with db.session() as session:
        return [NoteRecord.of(r) for r in session.scalars(query)]


def unknown_due(db: AppDatabase, now: datetime, reason_code: str, *, limit: int = 100) -> list[NoteRecord]:
    """``unknown`` notes with ``reason_code`` due for another identifier search (a create the EHR accepted, 202)."""
    query = (
        _movable(select(NoteOutbox))
        .where(
            NoteOutbox.state == "unknown",
            NoteOutbox.reason_code == reason_code,
            NoteOutbox.next_attempt_at <= now,
            Connection.status == ConnectionStatus.ACTIVE,
        )
        .order_by(NoteOutbox.next_attempt_at, NoteOutbox.id)
        .limit(limit)
    )
    with db.session() as session:
        return [NoteRecord.of(r) for r in session.scalars(query)]


def provenance_owed(db: AppDatabase, now: datetime, *, limit: int = 100) -> list[NoteRecord]:
    """``written`` notes whose Provenance is owed and due (DWB-82: their writing run never sent it), of active
    connections only (one that cannot write would only clear it), the longest due first."""
    query = (
        select(NoteOutbox)
        .join(Connection, Connection.id == NoteOutbox.connection_id)
        .where(
            NoteOutbox.state == "written",
            NoteOutbox.provenance_due_at <= now,
            Connection.status == ConnectionStatus.ACTIVE,
        )
        .order_by(NoteOutbox.provenance_due_at, NoteOutbox.id)
        .limit(limit)
    )
    with db.session() as session:
        return [NoteRecord.of(r) for r in session.scalars(query)]
