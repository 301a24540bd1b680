"""Closing a sync run: the ``sync_runs`` row and the connection's ``last_sync_at``.

Steps (assets) record their own counts as they go; only the run as a whole knows whether the sync
succeeded. A run status sensor calls this when a run ends, and ``run_sync_now`` calls it in-process;
both may fire for one run, so it is idempotent.
"""

from __future__ import annotations

import logging

from auth_service.store import AppDatabase
from auth_service.store.models import Connection
from pipelines.sync import runs

__all__ = ["finish_sync_run"]

logger = logging.getLogger(__name__)

_CLOSED = ("completed", "failed", "abandoned")  # abandoned: closed by a later run of the connection


def finish_sync_run(
    db: AppDatabase,
    run_id: str,
    connection_id: str,
    *,
    succeeded: bool,
    error: str | None = None,
) -> bool:
    """Close the run's ``sync_runs`` row if still open, and on success stamp ``last_sync_at``.

    Returns False when there was nothing to do: a run none of whose steps started has no row, and a row
    already closed (by the engine, as Bulk exports do, or by an earlier call) is not closed again.
    ``last_sync_at`` is the run's own finish time, so calling twice stamps the same instant; it moves only
    on success, so the scheduler retries a failed sync in its next slot.
    """
    record = runs.get(db, run_id)
    if record is None:
        return False
    changed = False
    if record.status not in _CLOSED:
        if succeeded:
            runs.complete(db, run_id)
        else:
            runs.fail(db, run_id, error or "run failed")
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
