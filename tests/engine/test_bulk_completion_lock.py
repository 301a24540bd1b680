"""A Bulk export's completion commit beside another writer of the app database (BDX-14; SQLite).

The completion transaction reads the job's row (``bulk_state.job_row``), then writes it and the export's
``_since``. Begun as a plain (deferred) SQLite transaction, a write committed by anyone else between that read and
the first write (another connection's sync, the API, the run-status sensor) failed the commit at once with
"database is locked" (WAL: the busy timeout does not apply to a read transaction that must upgrade), and the whole
export run with a traceback. It now takes the write lock first, as the REST upsert's completion does, and the other
writer waits its turn instead.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from sqlalchemy.orm import Session

from engine import bulk_state, cursors, run_bulk_export
from engine.models import BulkJob
from sandbox import SandboxServer
from tests.engine.helpers import SyncWorld, connect_backend

WAIT_S = 3.0


def test_bdx14_a_write_committed_during_the_completion_read_does_not_fail_the_export(
    world: SyncWorld, shared_sb: SandboxServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer tries to commit right after the completion read the job's row: before the fix it committed
    at once and the completion failed; now it waits for the completion's lock (``WAIT_S`` bounds that wait here,
    and the completion goes on without it), and both writes land."""
    db = world.env.db
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    original = bulk_state.job_row
    writers: list[tuple[threading.Thread, threading.Event]] = []

    def another_writer(committed: threading.Event) -> None:  # e.g. another connection's run saving its state
        with db.locked_session() as other:
            cursors.put_data(other, "other-connection", "other", "*", {"n": len(writers)})
            other.commit()
        committed.set()

    def read_then_another_writer_commits(session: Session, job_id: str) -> BulkJob:
        row = original(session, job_id)
        committed = threading.Event()
        writers.append((threading.Thread(target=another_writer, args=(committed,)), committed))
        writers[-1][0].start()
        committed.wait(WAIT_S)  # committed at once unless this transaction holds the write lock
        return row

    monkeypatch.setattr(bulk_state, "job_row", read_then_another_writer_commits)
    report = run_bulk_export(world.env, conn, "bulk-run")
    for writer, _ in writers:
        writer.join(60)
    assert report.status == "completed", report.error
    assert cursors.get_mark(db, conn, cursors.bulk_stream("group", "grp0"), "*") == report.transaction_time
    assert writers and all(committed.is_set() for _, committed in writers)
