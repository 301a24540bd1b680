"""Closing a sync run: the ``sync_runs`` row and the connection's ``last_sync_at``.

Steps (assets) record their own counts as they go; only the run as a whole knows whether the sync
succeeded. A run status sensor calls this when a run ends, and ``run_sync_now`` calls it in-process;
both may fire for one run, so it is idempotent. It is the one rule of a sync's outcome: the CLI, the demo,
the benchmark and the tests run the same Dagster job through ``run_sync_now``. A run succeeds when no step
failed: a type that failed (an error, a search that stopped early after storing what arrived, a grant that
needs re-authorization) fails the run, which is then retried, and only a success moves ``last_sync_at``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from engine import cursors, runs
from engine.connection_snapshots import read_connection
from engine.connection_sync import rest_types
from engine.errors import ConnectionNotFoundError
from store import AppDatabase
from store.models import Connection

__all__ = ["CANCELED_PREFIX", "RunTimes", "finish_sync_run", "record_unstarted_failure"]

logger = logging.getLogger(__name__)

# A canceled run is closed ``failed`` with this prefix: somebody stopped it, so it is not retried.
CANCELED_PREFIX = "canceled: "
# Not ``abandoned``: a later run closes a row so only when its process is gone; should the run end after all
# (Dagster says how it ended), that outcome replaces the guess and a success still stamps ``last_sync_at``.
# ``deferred``: a batch member never attempted (its source throttled) keeps that outcome when the batch run ends.
_CLOSED = ("completed", "failed", "deferred")


@dataclass(frozen=True)
class RunTimes:
    """When a Dagster run started and ended, from its run record (either may be unknown)."""

    started_at: datetime | None = None
    finished_at: datetime | None = None


def finish_sync_run(
    db: AppDatabase,
    run_id: str,
    connection_id: str,
    *,
    succeeded: bool,
    error: str | None = None,
    times: RunTimes | None = None,
) -> bool:
    """Close the run's ``sync_runs`` row if still open, and on success stamp ``last_sync_at``.

    Returns False when there was nothing to do: a run none of whose steps started has no row, and a row
    already closed (by the engine, as Bulk exports do, or by an earlier call) is not closed again; a row closed
    ``abandoned`` by a later run is closed with the run's real outcome.
    ``times`` are the run's own (Dagster's run record): the row then records when the run ended, not when
    a sensor got round to closing it, and its duration is the run's. ``last_sync_at`` is the row's finish
    time, so calling twice stamps the same instant; it moves only on success (a failure is retried, see
    ``engine.retries``).
    """
    record = runs.get(db, run_id)
    if record is None:
        return False
    changed = False
    if record.status not in _CLOSED:
        at = times or RunTimes()
        if succeeded:
            runs.complete(db, run_id, started_at=at.started_at, finished_at=at.finished_at)
        else:
            runs.fail(db, run_id, error or "run failed", started_at=at.started_at, finished_at=at.finished_at)
        changed = True
        record = runs.get(db, run_id) or record
    if succeeded and record.status == "completed" and record.finished_at is not None:
        with db.locked_session() as session:  # read-modify-write: hold the write lock from the read (SQLite)
            conn = session.get(Connection, connection_id)
            if conn is not None and conn.last_sync_at != record.finished_at:
                conn.last_sync_at = record.finished_at
                session.commit()
                changed = True
    logger.info("sync run %s of connection %s closed as %s", run_id, connection_id, record.status)
    return changed


def record_unstarted_failure(
    db: AppDatabase,
    run_id: str,
    connection_id: str,
    *,
    full: bool,
    error: str,
    times: RunTimes | None = None,
    earlier_runs: Sequence[str] = (),
    full_types: Sequence[str] | None = None,
) -> bool:
    """Record as failed a sync run that failed before any step opened its row (its process died at start, a step
    failed before reaching the EHR: the vault key, the connection's lock held elsewhere). Unrecorded, such a run
    left no trace, and its run key (the slot's) was spent, so the connection waited for its next slot; recorded,
    it is retried with backoff (``engine.retries``). Only for a connection that exists and may sync; returns
    whether a row was written (False: the run has its row already). A failed ``full`` run's intent is recorded
    whether or not a step began (``cursors.begin_full``, once per run): its retry searches in full every type it
    was asked for (``full_types``: the run's selection; None: every type).
    ``earlier_runs``: the runs a re-execution carries on; their intent was recorded, and the marks their finished
    types stored since are kept (forgotten again, each would be searched whole once more)."""
    try:
        conn = read_connection(db, connection_id)
    except ConnectionNotFoundError:
        return False
    if not conn.syncable:
        return False
    if full and not conn.is_bulk:
        cursors.begin_full(db, connection_id, run_id, rest_types(full_types), earlier_runs)
    if runs.get(db, run_id) is not None:
        return False
    kind = "bulk" if conn.is_bulk else ("full" if full else "incremental")
    runs.create_run(db, connection_id, kind, run_id=run_id, tenant_id=conn.tenant_id or None)
    return finish_sync_run(db, run_id, connection_id, succeeded=False, error=error, times=times)
