"""The upsert's completion transaction (mark, reference queue, run counts) is a read-modify-write: it must
hold the write lock from its first read (BDX-27: the mark is stored in the commit that records the upsert).

On SQLite a deferred transaction that read before another process committed fails at once with "database is
locked" when it then writes (WAL snapshot upgrade): the type's upsert step would fail although nothing is wrong.
The run's own stamp (``last_sync_at``, written by ``finish_sync_run``) keeps the same rule:
tests/pipelines/test_finalize_lock.py.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy.orm import Session

from engine import cursors
from engine.incremental import land_resource_type, upsert_resource_type
from store import AppDatabase
from store.models import Tenant
from tests.engine.helpers import connect_patient


def test_completion_survives_a_concurrent_writer_bdx27(world, shared_sb, http, monkeypatch: pytest.MonkeyPatch):
    conn = connect_patient(world, shared_sb, http=http)
    land_resource_type(world.env, conn, "Patient", "run-1")
    other = AppDatabase.from_url(world.env.db.engine.url.render_as_string(hide_password=False))
    writer_done = threading.Event()
    errors: list[BaseException] = []

    def concurrent_write() -> None:
        try:
            with other.locked_session() as session:  # the other writer follows the rule itself
                tenant = session.get(Tenant, world.tenant_id)
                assert tenant is not None
                tenant.name = "renamed by another process"
        except BaseException as exc:  # reported below: the other writer must succeed too
            errors.append(exc)
        finally:
            writer_done.set()

    real_add_references = cursors.add_references
    threads: list[threading.Thread] = []

    def add_references_with_interleaved_writer(session: Session, connection_id: str, refs: list[str]) -> Any:
        # The completion transaction has already read the cursor row: another process commits now.
        thread = threading.Thread(target=concurrent_write)
        threads.append(thread)
        thread.start()
        writer_done.wait(timeout=1.0)  # with the lock held the writer waits for our commit instead
        return real_add_references(session, connection_id, refs)

    monkeypatch.setattr(cursors, "add_references", add_references_with_interleaved_writer)
    try:
        report = upsert_resource_type(world.env, conn, "Patient", "run-1")
    finally:
        for thread in threads:
            thread.join(timeout=60)
        other.dispose()
    assert threads, "the completion transaction did not run"
    assert errors == []
    assert report.created == 1
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Patient") == report.high_water_mark
    assert cursors.get_pending(world.env.db, conn, cursors.REST_STREAM, "Patient") is None
