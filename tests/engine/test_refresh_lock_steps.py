"""Another process holding a connection's grant refresh past the refresh lock's timeout (``RefreshLockTimeoutError``,
SQLite app databases) is waited out once per ``incremental_sync`` run, not once per step: the step that met it
fails with it, and each later landing step of the run sends nothing and fails naming that wait at once. Before,
every type step waited the whole timeout (300 s) again, holding the connection's lock. Through the real job over a
sandbox, the timeout made short so the test is quick."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import store._refresh as refresh
import store._refresh_lock as refresh_lock
from store import AppDatabase, RefreshLockTimeoutError
from store._refresh_lock import sqlite_refresh_lock
from store.models import TokenRecord
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, connect_patient, sandbox_patients
from tests.engine.job_runs import run_sync

_TIMEOUT_S = 2.0  # the refresh lock's wait (300 s in production)
_TYPES = ["Patient", "Encounter", "Condition"]


def _expire_the_token(db: AppDatabase, connection_id: str) -> None:
    """The access token has expired: the next request needs a refresh, so it needs the refresh lock."""
    with db.session() as session:
        row = session.get(TokenRecord, connection_id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(minutes=5)
        row.issued_at = row.expires_at - timedelta(hours=1)
        session.commit()


def test_a_refresh_lock_held_past_its_timeout_is_waited_out_once_per_run_not_once_per_step(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    _expire_the_token(world.env.db, cid)
    monkeypatch.setattr(refresh_lock, "REFRESH_LOCK_TIMEOUT_S", _TIMEOUT_S)
    waited: list[float] = []  # the waits that ran out
    lock = refresh.sqlite_refresh_lock

    @contextmanager
    def counted(db: AppDatabase, connection_id: str, **options: Any) -> Iterator[None]:
        started = time.monotonic()
        try:
            with lock(db, connection_id, **options):
                yield
        except RefreshLockTimeoutError:
            waited.append(time.monotonic() - started)
            raise

    monkeypatch.setattr(refresh, "sqlite_refresh_lock", counted)
    request_log.clear()
    with sqlite_refresh_lock(world.env.db, cid, timeout_s=0):  # "another process" refreshing, for longer than 2 s
        run = run_sync(world, cid, types=_TYPES)
    assert not run.result.success
    assert len(waited) == 1 and waited[0] >= _TIMEOUT_S * 0.9, waited  # before: once per type step
    errors = {step: error for step, error in run.result.step_errors.items() if step.startswith("landing__")}
    assert set(errors) == {f"landing__{t}" for t in _TYPES}, run.result.step_errors
    (first,) = [step for step, error in errors.items() if "RefreshLockTimeoutError" in error]
    for step, error in errors.items():
        if step != first:
            assert f"not tried: step {first} of this run waited out the grant's refresh lock" in error, error
            assert f"refresh_lock_timeout: connection {cid}: another process has been refreshing" in error, error
    assert not [u for u in request_log.urls if u.path.startswith("/fhir/")], request_log.urls
