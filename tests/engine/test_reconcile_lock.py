"""Deletion reconciliation (BDX-31) takes the connection's lock like every other engine entry point (issue 10):
a reconcile listing the server's ids beside a sync of the same connection would tombstone what that sync lands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine import ConnectionBusyError, reconcile_deletes
from engine.connection_lock import LOCK_WAIT_ENV, hold_connection
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, connect_patient, mutate
from tests.engine.job_runs import run_sync

REPO = Path(__file__).resolve().parents[2]


def _live(world: SyncWorld, connection_id: str, resource_type: str) -> int:
    with world.env.warehouse() as wh:
        rows = [r for r in wh.summary() if r["connection_id"] == connection_id and r["resource_type"] == resource_type]
    return int(rows[0]["live"]) if rows else 0


def _hold(root: Path, connection_id: str, run_id: str) -> subprocess.Popen[str]:
    """Another process holding the connection's lock (tests/engine/residue_driver.py)."""
    cmd = [sys.executable, "-m", "tests.engine.residue_driver", "hold", str(root), connection_id, run_id]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.stderr
    return proc


def test_reconcile_waits_for_a_sync_of_the_connection_in_another_process_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client, request_log: RequestLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process holds the connection: ``reconcile_deletes`` waits the bounded time, then raises
    ``ConnectionBusyError`` naming that run, having asked the server nothing and tombstoned nothing; once the
    holder is gone the same call reconciles."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http)
    assert run_sync(world, conn).status == "completed"
    refs: list[str] = mutate(http, sb, delete=3)["deleted"]
    rtype = refs[0].split("/")[0]
    deleted = [ref for ref in refs if ref.startswith(f"{rtype}/")]
    before = _live(world, conn, rtype)
    monkeypatch.setenv(LOCK_WAIT_ENV, "1")
    proc = _hold(world.env.zone.root, conn, "run-syncing")
    try:
        requests_before = len(request_log.urls)
        started = time.monotonic()
        with pytest.raises(ConnectionBusyError, match=f"run run-syncing \\(pid {proc.pid} ") as caught:
            reconcile_deletes(world.env, conn, rtype)
        assert 1.0 <= time.monotonic() - started < 10
        assert "run reconcile-" in str(caught.value) and LOCK_WAIT_ENV in str(caught.value)
        assert len(request_log.urls) == requests_before
        assert _live(world, conn, rtype) == before
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert reconcile_deletes(world.env, conn, rtype).tombstoned == len(deleted) > 0
    assert _live(world, conn, rtype) == before - len(deleted)


def test_reconcile_inside_a_held_connection_reenters_the_lock(
    world: SyncWorld, shared_sb, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within one thread the lock is re-entrant: a caller already holding the connection (e.g. a maintenance step)
    may reconcile without waiting on itself."""
    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, types=["Observation"]).status == "completed"
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")
    with hold_connection(world.env, conn, "run-maintenance"):
        assert reconcile_deletes(world.env, conn, "Observation").tombstoned == 0
