"""Two runs of one connection can overlap (issue 10): the connection lock is taken per step, not per run, and
``ehrsync sync`` runs in-process beside the daemon's queue. A run that completes closes an older ``running`` row
as ``abandoned`` only when that row's process is gone; a live one goes on and ends ``completed``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from engine import land_resource_type, runs, upsert_resource_type
from engine.models import SyncRun
from engine.run_outcome import finish_sync_run
from store.models import Connection
from tests.engine.helpers import connect_patient, make_environment
from tests.engine.test_crash import _run_child


def _reaped_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_older_run_is_not_abandoned_by_an_overlapping_run(tmp_path: Path, shared_sb, http: httpx.Client):
    """Run A (this process) has done its first step; between its steps another process syncs the connection to the
    end. A stays ``running``, then completes with its own outcome, and its end stamps ``last_sync_at``."""
    root = tmp_path / "overlap"
    world = make_environment(root, http=http)
    conn = connect_patient(world, shared_sb, http=http)
    land_resource_type(world.env, conn, "Patient", "run-a")
    upsert_resource_type(world.env, conn, "Patient", "run-a")

    other = _run_child(root, world, conn, "incremental", None)
    assert other.returncode == 0, other.stderr[-2000:]
    assert orjson.loads(other.stdout.splitlines()[-1])["status"] == "completed"
    assert runs.require(world.env.db, "run-a").status == "running"  # its process (this one) is alive

    land_resource_type(world.env, conn, "Observation", "run-a")
    upsert_resource_type(world.env, conn, "Observation", "run-a")
    assert finish_sync_run(world.env.db, "run-a", conn, succeeded=True)
    closed = runs.require(world.env.db, "run-a")
    assert closed.status == "completed" and closed.error is None
    with world.env.db.session() as session:
        row = session.get(Connection, conn)
        assert row is not None and row.last_sync_at == closed.finished_at


def test_a_run_whose_process_is_gone_is_abandoned(tmp_path: Path, http: httpx.Client) -> None:
    """The dead row (its pid gone on this host) is closed; rows of live processes, of other hosts and queued rows
    stay open."""
    world = make_environment(tmp_path / "w", http=http)
    db = world.env.db
    dead, live, remote = (runs.create_run(db, "c1", "incremental", run_id=r) for r in ("dead", "live", "remote"))
    for rid in (dead, live, remote):
        runs.mark_running(db, rid)
    with db.locked_session() as session:
        for rid, pid, host in ((dead, _reaped_pid(), None), (remote, 1, "another-host")):
            row = session.get(SyncRun, rid)
            assert row is not None
            row.owner_pid = pid
            row.owner_host = host or row.owner_host
        session.commit()
    current = runs.create_run(db, "c1", "incremental")
    runs.mark_running(db, current)
    assert runs.abandon_stale(db, "c1", keep=current) == 1
    assert [runs.require(db, r).status for r in (dead, live, remote)] == ["abandoned", "running", "running"]


def test_finish_closes_a_row_abandoned_wrongly_with_the_runs_outcome(tmp_path: Path, http: httpx.Client) -> None:
    """Should a row be closed ``abandoned`` while its run lived on, the run's end still closes it and stamps
    ``last_sync_at`` on success."""
    world = make_environment(tmp_path / "w", http=http)
    db = world.env.db
    rid = runs.create_run(db, "c1", "incremental")
    runs.mark_running(db, rid)
    with db.locked_session() as session:
        row = session.get(SyncRun, rid)
        assert row is not None
        row.status, row.error = "abandoned", "abandoned: guessed"
        session.commit()
    assert finish_sync_run(db, rid, "c1", succeeded=True)
    assert runs.require(db, rid).status == "completed"
