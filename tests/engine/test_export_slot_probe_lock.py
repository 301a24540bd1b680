"""The export-slot probe (``engine.export_slot_orphans``) asks about another connection's orphaned export under that
connection's lock, with that connection's grant (BDX-07/BDX-09). When the grant's token is due a refresh and another
process is refreshing it, the probe skips the question this time (the job keeps the slot, as for no answer) instead
of waiting for the refresh lock (up to 300 s on SQLite, for good on PostgreSQL) while holding the other connection's
lock: before, that connection's own run failed ``connection_busy`` after its 30 s wait."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine import run_bulk_export
from engine.bulk_state import find_job
from engine.connection_lock import connection_lock
from engine.models import utcnow
from store._refresh_apply import lock_row
from store._refresh_lock import sqlite_refresh_lock
from store.models import TokenRecord
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld
from tests.engine.test_export_slot_claims import _crashed_export, _pair


@contextlib.contextmanager
def _refreshing_elsewhere(world: SyncWorld, connection_id: str) -> Iterator[None]:
    """Another process's refresh of the grant, under way: its refresh lock held (SQLite) or its rows (PostgreSQL)."""
    db = world.env.db
    if db.dialect == "sqlite":
        with sqlite_refresh_lock(db, connection_id):
            yield
        return
    with db.locked_session() as session:
        lock_row(session, connection_id)
        yield
        session.rollback()


def _expire_token(world: SyncWorld, connection_id: str) -> None:
    with world.env.db.session() as session:
        row = session.get(TokenRecord, connection_id)
        assert row is not None
        row.issued_at, row.expires_at = utcnow() - timedelta(hours=2), utcnow() - timedelta(hours=1)
        session.commit()


def test_bdx07_the_probe_does_not_wait_for_another_processs_refresh_of_the_orphans_grant(
    start_sandbox: Any, slot_world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    world = slot_world
    sb = start_sandbox(bulk_throttle_s=6.0)
    first, second = _pair(world, sb, http)
    job = _crashed_export(world, first)
    _expire_token(world, first)
    request_log.clear()
    reports: list[Any] = []
    with _refreshing_elsewhere(world, first):
        probing = threading.Thread(target=lambda: reports.append(run_bulk_export(world.env, second, "probe")))
        probing.start()
        probing.join(timeout=90)  # before: the probe waited 300 s (SQLite) or for good (PostgreSQL)
        returned = not probing.is_alive()
        if returned:  # the first connection's own run can take its lock: the probe holds it no longer
            with connection_lock(world.env.zone.root, first, "first's own run", wait_s=30.0):
                pass
    probing.join(timeout=300)
    assert returned, "the probe waited for another process's refresh while holding the other connection's lock"
    assert reports and reports[0].error is not None
    assert reports[0].error.startswith(f"bulk_export_busy: no export was started: connection {first}")
    assert find_job(world.env.db, job.id).status == "polling"  # it keeps the slot, as for no answer
    assert not request_log.paths(urlsplit(job.status_url).path)  # not asked this time


def test_bdx07_a_401_on_the_probes_status_request_does_not_wait_for_another_processs_refresh(
    start_sandbox: Any, slot_world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """The grant's token is fresh, so the probe's token needs no refresh, but the EHR answers its status request 401
    (the token was revoked there): the one refresh after a 401 must not wait for another process's refresh of that
    grant either (before, it waited the refresh lock's 300 s, for good on PostgreSQL, holding the other connection's
    lock). The probe skips the question this time, and the job keeps the slot."""
    world = slot_world
    sb = start_sandbox(bulk_throttle_s=6.0)
    first, second = _pair(world, sb, http)
    job = _crashed_export(world, first)
    status_path = urlsplit(job.status_url).path
    sb.admin.set_fault("expired_token", path=status_path, times=1)
    request_log.clear()
    reports: list[Any] = []
    with _refreshing_elsewhere(world, first):
        probing = threading.Thread(target=lambda: reports.append(run_bulk_export(world.env, second, "probe")))
        probing.start()
        probing.join(timeout=90)
        returned = not probing.is_alive()
    probing.join(timeout=300)
    assert returned, "the probe's refresh after a 401 waited for another process's refresh of the grant"
    assert len(request_log.paths(status_path)) == 1  # asked once, answered 401; not asked again
    assert reports and reports[0].error is not None
    assert reports[0].error.startswith(f"bulk_export_busy: no export was started: connection {first}")
    assert find_job(world.env.db, job.id).status == "polling"
