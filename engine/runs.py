"""Sync history in the app database (``sync_runs``): the one place the API, the UI and Dagster read it from."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.models import SyncRun, utcnow
from engine.row_views import row_view
from store import AppDatabase
from store.models import Connection

_log = logging.getLogger(__name__)
KINDS = ("incremental", "full", "bulk")
# abandoned: the run's process died (killed, OOM) before closing its row; a later run of the connection that
# completed found that process gone and closed it. deferred: a batch member not attempted, its source throttled
# (``engine.batch_defer``), or an automatic retry of a connection's own run that its source held (``defer``);
# asked for again after ``not_before``, and no failure.
STATUSES = ("queued", "running", "completed", "failed", "abandoned", "deferred")


class SyncRunNotFoundError(LookupError):
    """No ``sync_runs`` row has that id."""


@dataclass(frozen=True)
class SyncRunRecord:
    """A detached, read-only copy of one ``sync_runs`` row."""

    id: str
    connection_id: str
    tenant_id: str | None
    kind: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, Any]
    bytes: int
    duration_s: float | None
    error: str | None
    not_before: datetime | None = None

    @classmethod
    def of(cls, row: SyncRun) -> SyncRunRecord:
        return row_view(cls, row, counts=dict(row.counts or {}))


def create_run(
    db: AppDatabase, connection_id: str, kind: str, *, tenant_id: str | None = None, run_id: str | None = None
) -> str:
    """Record a queued run and return its id (a new UUID unless the caller, e.g. Dagster, supplies its own)."""
    if kind not in KINDS:
        raise ValueError(f"unknown sync kind {kind!r}: expected one of {KINDS}")
    rid = run_id or uuid.uuid4().hex
    with db.locked_session() as session:
        session.add(_queued(rid, connection_id, kind, tenant_id))
        session.commit()
    return rid


def _queued(run_id: str, connection_id: str, kind: str, tenant_id: str | None) -> SyncRun:
    """A new ``queued`` row with no counts yet (``create_run`` and ``ensure_run`` both start a run so)."""
    return SyncRun(
        id=run_id,
        connection_id=connection_id,
        tenant_id=tenant_id,
        kind=kind,
        status="queued",
        created_at=utcnow(),
        counts={},
        bytes=0,
    )


def ensure_run(db: AppDatabase, connection_id: str, run_id: str, kind: str, *, tenant_id: str | None = None) -> None:
    """Create the run row if absent (Dagster hands us its own run ids), and mark it running."""
    with db.locked_session() as session:
        if session.get(SyncRun, run_id) is None:
            session.add(_queued(run_id, connection_id, kind, tenant_id))
            session.commit()
    mark_running(db, run_id)


def continue_run(db: AppDatabase, connection_id: str, run_id: str, earlier_runs: Sequence[str]) -> None:
    """Open the row of a run that carries on earlier runs' work (Dagster's "re-execute from failure" runs only the
    failed steps, under a new run id): the kind and tenant of the newest earlier row, so its success is recorded
    (``finish_sync_run`` closes only a row that exists) and a full run's re-execution stays full."""
    with db.session() as session:
        if session.get(SyncRun, run_id) is not None:
            return
        rows = (session.get(SyncRun, rid) for rid in earlier_runs)
        kind, tenant = next(((r.kind, r.tenant_id) for r in rows if r is not None), ("incremental", None))
        if tenant is None:  # the parent's row is gone (or had none): the connection's own tenant
            conn = session.get(Connection, connection_id)
            tenant = conn.tenant_id if conn is not None else None
    ensure_run(db, connection_id, run_id, kind, tenant_id=tenant)


def note_full(db: AppDatabase, run_id: str) -> None:
    """Record an incremental run as ``full``: it searched in whole a type a failed full run still owed (its retry,
    the next scheduled or batch run), so the row says what the run did."""
    with db.locked_session() as session:
        row = _load(session, run_id)
        if row.kind == "incremental":
            row.kind = "full"
            session.commit()


def _load(session: Session, run_id: str) -> SyncRun:
    row = session.get(SyncRun, run_id)
    if row is None:
        raise SyncRunNotFoundError(f"sync run {run_id!r} not found")
    return row


def mark_running(db: AppDatabase, run_id: str) -> None:
    """Flag the run as running (idempotent: a resumed run keeps its first start time)."""
    with db.locked_session() as session:
        row = _load(session, run_id)
        row.status = "running"
        row.started_at = row.started_at or utcnow()
        row.finished_at = None
        row.owner_pid, row.owner_host = os.getpid(), socket.gethostname()
        session.commit()


def record_type_counts(session: Session, run_id: str, resource_type: str, counts: dict[str, Any]) -> None:
    """Merge one type's counts into the run inside the caller's transaction (beside the cursor it advances)."""
    row = _load(session, run_id)
    merged = dict(row.counts or {})
    merged[resource_type] = counts
    row.counts = merged
    row.bytes = sum(int(c.get("bytes", 0)) for c in merged.values() if isinstance(c, dict))


def _finish(
    db: AppDatabase,
    run_id: str,
    status: str,
    counts: dict[str, Any] | None,
    error: str | None,
    *,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    not_before: datetime | None = None,
) -> None:
    """Close the row; ``started_at``/``finished_at`` are the run's own times when the caller knows them (Dagster's
    run record), otherwise the row keeps its start and finishes now."""
    with db.locked_session() as session:
        row = _load(session, run_id)
        now = finished_at or utcnow()
        row.status = status
        row.not_before = not_before or row.not_before
        row.started_at = started_at or row.started_at
        row.finished_at = now
        if counts is not None:
            row.counts = counts
            row.bytes = sum(int(c.get("bytes", 0)) for c in counts.values() if isinstance(c, dict))
        if row.started_at is not None:
            row.duration_s = (now - row.started_at).total_seconds()
        row.error = error
        session.commit()


def complete(
    db: AppDatabase,
    run_id: str,
    counts: dict[str, Any] | None = None,
    *,
    error: str | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> None:
    """Mark the run completed; ``error`` may summarize types that failed while the run as a whole went on.
    Runs of the same connection left open by a killed process before this one started are closed as abandoned."""
    _finish(db, run_id, "completed", counts, error, started_at=started_at, finished_at=finished_at)
    abandon_stale(db, require(db, run_id).connection_id, keep=run_id)


def fail(
    db: AppDatabase,
    run_id: str,
    error: str,
    counts: dict[str, Any] | None = None,
    *,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> None:
    """Mark the run failed with a log-safe reason."""
    _finish(db, run_id, "failed", counts, error, started_at=started_at, finished_at=finished_at)


def defer(
    db: AppDatabase, run_id: str, reason: str, not_before: datetime, *, finished_at: datetime | None = None
) -> None:
    """Close the run ``deferred`` (no failure streak) until ``not_before``, in one write: its source held it and it
    sent nothing (an automatic retry, ``engine.run_holds``); the scheduler asks for the connection then."""
    _finish(db, run_id, "deferred", None, reason, finished_at=finished_at, not_before=not_before)


def hold_until(db: AppDatabase, run_id: str, not_before: datetime, *, deferred: str | None = None) -> None:
    """Note when the EHR said to come back: the connection is not asked for again before it. ``deferred`` (the
    reason): close the still queued row so, as ``deferred``, not as a failure (a batch member not attempted, its
    source throttled; ``engine.batch_defer``)."""
    with db.locked_session() as session:
        row = _load(session, run_id)
        row.not_before = not_before
        if deferred is not None and row.status == "queued":
            row.status, row.finished_at, row.error = "deferred", utcnow(), deferred
        session.commit()


def process_gone(pid: int | None, host: str | None) -> bool:
    """Whether the process that marked a run running is known to have ended: it ran on this host and no process
    has its pid now. Unknown is not gone: another host's process cannot be checked (the state directory is one
    host's), and a reused pid reads as alive (the row then waits for the run-status sensors). A row without an
    owner predates owners being recorded (migration 0004): its process predates this upgrade, so it is gone."""
    if pid is None:
        return True
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a live process of another user
        return False
    return False


def abandon_stale(db: AppDatabase, connection_id: str, *, keep: str) -> int:
    """Close as ``abandoned`` the runs of this connection still ``running`` that started before run ``keep`` did
    and whose process is gone (``process_gone``); returns how many. Called when ``keep`` completes. Two runs of one
    connection can overlap (the connection lock is taken per step, and ``ehrsync sync`` skips Dagster's queue), so
    an older row still running is abandoned only when its process is known dead. ``queued`` rows are left alone: a
    queued run may still be waiting its turn in Dagster's queue (a launch that never happens is closed by the
    run-status sensors), and the engine marks its own rows running as it creates them."""
    with db.locked_session() as session:
        current = _load(session, keep)
        began = current.started_at or current.created_at
        candidates = session.scalars(
            select(SyncRun).where(
                SyncRun.connection_id == connection_id,
                SyncRun.status == "running",
                SyncRun.id != keep,
                SyncRun.started_at < began,
            )
        ).all()
        rows = [row for row in candidates if process_gone(row.owner_pid, row.owner_host)]
        now = utcnow()
        for row in rows:
            row.status = "abandoned"
            row.finished_at = now
            if row.started_at is not None:
                row.duration_s = (now - row.started_at).total_seconds()
            row.error = (
                f"abandoned: its process (pid {row.owner_pid}) ended without closing it; run {keep} completed after it"
            )
        session.commit()
        if rows:
            _log.info("closed %d abandoned run(s) of connection %s", len(rows), connection_id)
        return len(rows)


def history(db: AppDatabase, connection_id: str, *, limit: int = 50) -> list[SyncRunRecord]:
    """The connection's runs, newest first."""
    with db.session() as session:
        rows = session.scalars(
            select(SyncRun)
            .where(SyncRun.connection_id == connection_id)
            .order_by(SyncRun.created_at.desc(), SyncRun.id.desc())
            .limit(limit)
        ).all()
        return [SyncRunRecord.of(r) for r in rows]


def get(db: AppDatabase, run_id: str) -> SyncRunRecord | None:
    """One run by id, or ``None``."""
    with db.session() as session:
        row = session.get(SyncRun, run_id)
        return SyncRunRecord.of(row) if row is not None else None


def require(db: AppDatabase, run_id: str) -> SyncRunRecord:
    """One run by id; raises SyncRunNotFoundError when there is none."""
    record = get(db, run_id)
    if record is None:
        raise SyncRunNotFoundError(f"sync run {run_id!r} not found")
    return record
