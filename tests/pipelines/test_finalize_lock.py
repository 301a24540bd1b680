"""Stamping ``last_sync_at`` is a read-modify-write of the connection row: on SQLite it must hold the write lock
from its read, or a writer committing in between (another run, a token refresh) fails it at once with
"database is locked" and the scheduler syncs the connection again in its next slot."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event

from engine import runs
from engine.run_outcome import finish_sync_run
from store import AppDatabase
from store.models import Tenant
from tests.pipelines.appdb import AppDb


def test_last_sync_stamp_survives_a_concurrent_writer(app_db: AppDb) -> None:
    cid = app_db.add("c1")
    runs.ensure_run(app_db.db, cid, "run-1", "incremental", tenant_id=app_db.tenant_id)
    other = AppDatabase.from_url(app_db.url)
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    done = threading.Event()

    def concurrent_write() -> None:
        try:
            with other.locked_session() as session:
                tenant = session.get(Tenant, app_db.tenant_id)
                assert tenant is not None
                tenant.name = "renamed by another process"
        except BaseException as exc:  # the other writer must succeed too
            errors.append(exc)
        finally:
            done.set()

    def after_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Right after finish_sync_run reads the connection row, another process commits a write.
        if not threads and statement.lstrip().upper().startswith("SELECT") and "FROM connections" in statement:
            thread = threading.Thread(target=concurrent_write)
            threads.append(thread)
            thread.start()
            done.wait(timeout=1.0)  # with the lock held the writer waits for our commit instead

    event.listen(app_db.db.engine, "after_cursor_execute", after_execute)
    try:
        assert finish_sync_run(app_db.db, "run-1", cid, succeeded=True)
    finally:
        event.remove(app_db.db.engine, "after_cursor_execute", after_execute)
        for thread in threads:
            thread.join(timeout=60)
        other.dispose()
    assert threads, "finish_sync_run never read the connection row"
    assert errors == []
    assert app_db.last_sync_at(cid) is not None
