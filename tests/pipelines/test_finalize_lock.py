"""Stamping ``last_sync_at`` is a read-modify-write of the connection row: on SQLite it must hold the write lock
from its read, or a writer committing in between (another run, a token refresh) fails it at once with
"database is locked" and the scheduler syncs the connection again in its next slot."""

from __future__ import annotations

from engine import runs
from engine.run_outcome import finish_sync_run
from tests.pipelines.appdb import AppDb
from tests.store.concurrent_writer import writer_after_read


def _reads_connection(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "FROM connections" in statement


def test_last_sync_stamp_survives_a_concurrent_writer(app_db: AppDb) -> None:
    cid = app_db.add("c1")
    runs.ensure_run(app_db.db, cid, "run-1", "incremental", tenant_id=app_db.tenant_id)
    # Right after finish_sync_run reads the connection row, another process commits a write.
    with writer_after_read(app_db.db, app_db.tenant_id, _reads_connection) as writer:
        assert finish_sync_run(app_db.db, "run-1", cid, succeeded=True)
    assert writer.threads, "finish_sync_run never read the connection row"
    assert writer.errors == []
    assert app_db.last_sync_at(cid) is not None
