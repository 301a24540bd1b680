"""Killed runs leave no residue (issue 10): the next run of the connection removes the temporary landing files and
Bulk download directories a killed process left, closes its ``sync_runs`` row as ``abandoned`` once it completes,
and the engine itself refuses (after a bounded wait) a second concurrent sync of one connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine import connection_lock as connection_lock_module
from engine import run_bulk_export, runs
from engine.connection_lock import (
    LOCK_WAIT_ENV,
    ConnectionBusyError,
    busy_holder,
    connection_lock,
    hold_connection,
    lock_path,
)
from tests.engine.helpers import SyncWorld, connect_backend, connect_patient, make_environment
from tests.engine.job_runs import run_sync, sync_type
from tests.engine.test_crash import _run_child

REPO = Path(__file__).resolve().parents[2]


def _driver(mode: str, root: Path, connection_id: str, run_id: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.engine.residue_driver", mode, str(root), connection_id, run_id]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def holder(world: SyncWorld) -> Iterator[Callable[[str, str], subprocess.Popen[str]]]:
    """A second process that holds a connection's lock; killed at the end of the test."""
    started: list[subprocess.Popen[str]] = []

    def start(connection_id: str, run_id: str) -> subprocess.Popen[str]:
        proc = _driver("hold", world.env.zone.root, connection_id, run_id)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.stderr
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def _age(path: Path, seconds: float = 600) -> None:
    """Make a leftover look as old as a killed run's (the cleanup also spares anything written in the last 60 s)."""
    when = time.time() - seconds
    for p in (path, *path.rglob("*")) if path.is_dir() else (path,):
        os.utime(p, (when, when))


def _killed_writer_leftovers(world: SyncWorld, connection_id: str) -> list[Path]:
    proc = _driver("die-writing", world.env.zone.root, connection_id, "run-killed")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    names = orjson.loads(out.splitlines()[-1])
    folder = world.env.zone.root / connection_id / "Observation"
    leftovers = [folder / n for n in names]
    assert len(leftovers) == 2 and all(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in leftovers)
    return leftovers


def test_killed_sync_leaves_no_residue(world: SyncWorld, shared_sb, http: httpx.Client) -> None:
    """A sync SIGKILLed mid-landing and a landing writer killed mid-file: the next completed sync removes the
    partial Parquet files and closes the killed run's row as abandoned, never leaving it "running"."""
    conn = connect_patient(world, shared_sb, http=http)
    killed = _run_child(world.env.zone.root.parent, world, conn, "incremental", "rest.page_landed:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [killed_run] = runs.history(world.env.db, conn)
    assert killed_run.status == "running"
    leftovers = _killed_writer_leftovers(world, conn)
    fresh = leftovers[0].with_name(".Observation-live.parquet.0123456789ab.tmp")
    fresh.write_bytes(b"a live writer's")  # not a lock holder's, but written just now: spared
    for p in leftovers:
        _age(p)

    report = run_sync(world, conn)
    assert report.status == "completed", report.error
    assert not any(p.exists() for p in leftovers)
    assert fresh.exists()
    closed = runs.require(world.env.db, killed_run.id)
    assert closed.status == "abandoned" and closed.finished_at is not None
    assert closed.error is not None and report.run_id in closed.error
    assert "abandoned" in runs.STATUSES


def test_killed_bulk_export_download_dir_is_removed(tmp_path: Path, shared_sb, http: httpx.Client) -> None:
    """``.bulk-tmp/<job>`` of a killed export goes when the connection's next step takes its lock; the resumed
    export then completes and closes the killed run as abandoned."""
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    killed = _run_child(root, world, conn, "bulk", "bulk.file_landed:2", "run-killed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [job_dir] = (world.env.zone.root / ".bulk-tmp").iterdir()
    other = world.env.zone.root / ".bulk-tmp" / "job-of-another-connection"
    other.mkdir()
    for p in (job_dir, other):
        _age(p)

    with hold_connection(world.env, conn, "run-next"):
        assert not job_dir.exists()
        assert other.exists()
    report = run_bulk_export(world.env, conn, "run-resumed")
    assert report.status == "completed" and report.resumed, report.error
    assert runs.require(world.env.db, "run-killed").status == "abandoned"


def test_a_second_process_syncing_the_connection_is_refused(
    world: SyncWorld, shared_sb, http: httpx.Client, holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the connection: a sync step waits the bounded time, then raises
    ``ConnectionBusyError`` naming that run and pid, and records no run; once it is gone the sync runs."""
    conn = connect_patient(world, shared_sb, http=http)
    monkeypatch.setenv(LOCK_WAIT_ENV, "1")
    proc = holder(conn, "run-elsewhere")
    started = time.monotonic()
    with pytest.raises(ConnectionBusyError, match=f"run run-elsewhere \\(pid {proc.pid} ") as caught:
        sync_type(world, conn, "Patient")
    assert 1.0 <= time.monotonic() - started < 10
    assert caught.value.code == "connection_busy" and LOCK_WAIT_ENV in str(caught.value)
    assert runs.history(world.env.db, conn) == []
    proc.kill()
    proc.wait(timeout=10)
    assert sync_type(world, conn, "Patient").error is None


def test_a_waiting_caller_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    """Two threads: the second waits (bounded) and proceeds once the first lets go; re-entry in one thread is free."""
    order: list[str] = []
    released = threading.Event()

    def first() -> None:
        with connection_lock(tmp_path, "c1", "run-1"), connection_lock(tmp_path, "c1", "run-1") as again:
            assert again is False  # re-entered, not taken twice
            order.append("first holds")
            released.wait(5)
            time.sleep(0.3)
            order.append("first releases")

    thread = threading.Thread(target=first)
    thread.start()
    while not order:
        time.sleep(0.01)
    with pytest.raises(ConnectionBusyError, match="run run-1 "), connection_lock(tmp_path, "c1", "run-2", wait_s=0):
        pass
    released.set()
    with connection_lock(tmp_path, "c1", "run-2", wait_s=10) as took:
        order.append("second holds")
        assert took is True
        assert b"run-2" in lock_path(tmp_path, "c1").read_bytes()
    thread.join()
    assert order == ["first holds", "first releases", "second holds"]
    with connection_lock(tmp_path, "c2", "run-3", wait_s=0):  # another connection is never blocked
        pass


def test_busy_holder_names_who_holds_the_connection_and_takes_nothing(world: SyncWorld, holder) -> None:
    """The weekly reconcile schedule's test (``busy_holder``): None for a connection never locked (no lock file
    made) or let go; the holder's run and pid while another process holds it, without waiting; and the probe
    leaves neither the lock taken nor the holder's note changed."""
    root = world.env.zone.root
    assert busy_holder(root, "c1") is None and not lock_path(root, "c1").exists()
    proc = holder("c1", "run-elsewhere")
    note = lock_path(root, "c1").read_bytes()
    assert f"run run-elsewhere (pid {proc.pid} " in str(busy_holder(root, "c1"))
    assert lock_path(root, "c1").read_bytes() == note
    proc.kill()
    proc.wait(timeout=10)
    assert busy_holder(root, "c1") is None
    with connection_lock(root, "c1", "run-next", wait_s=0):  # the probe let go of its shared lock
        assert busy_holder(root, "c1") is not None  # this process holds it now: as busy for a run


def test_a_sync_that_waits_for_nothing_starts_while_the_reconcile_probe_tries_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS=0``: a sync starting while the reconcile schedule's probe
    (``busy_holder``) is in its try starts. The probe tried the sync's own lock (a shared lock, let go at once), so
    a sync starting in those microseconds failed ``connection_busy`` and its run was retried. Here the probe is
    held inside its try (between taking and letting go) until the sync has taken the lock or failed."""
    with connection_lock(tmp_path, "c1", "run-before", wait_s=0):  # the connection has been synced before
        pass
    probing, answers, outcome = threading.Event(), [], []
    go = threading.Event()
    real_release, real_note = connection_lock_module.release_flock, connection_lock_module.write_holder

    def release(fd: int, **kwargs: bool) -> None:
        if threading.current_thread() is probe:  # the probe holds what it tried: keep it until the sync is in
            probing.set()
            go.wait(60)
        real_release(fd, **kwargs)

    def note(fd: int, info: dict[str, object]) -> None:
        real_note(fd, info)
        go.set()  # the sync holds the lock (its note is written once it does)

    monkeypatch.setattr(connection_lock_module, "release_flock", release)
    monkeypatch.setattr(connection_lock_module, "write_holder", note)

    def sync() -> None:
        try:
            with connection_lock(tmp_path, "c1", "run-now", wait_s=0):
                outcome.append("synced")
        except ConnectionBusyError as exc:
            outcome.append(exc.code)
        finally:
            go.set()

    probe = threading.Thread(target=lambda: answers.append(busy_holder(tmp_path, "c1")), daemon=True)
    probe.start()
    assert probing.wait(60)
    syncing = threading.Thread(target=sync, daemon=True)
    syncing.start()
    syncing.join(60)
    probe.join(60)
    assert outcome == ["synced"] and answers == [None]  # the probe found it free: the sync began after its try
    assert busy_holder(tmp_path, "c1") is None  # the sync let go of all it held


def test_a_flag_the_holder_cannot_open_does_not_stop_the_sync(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The flag serves only the reconcile probe: a holder that cannot open it (a ``.locks`` folder it cannot write
    to, a flag another user made; here a folder in its place) syncs without it, the lock still keeping a second
    sync out, and the warning names the flag. Before, the sync failed on the flag (``IsADirectoryError``)."""
    with connection_lock(tmp_path, "c1", "run-before", wait_s=0):
        pass
    flag = lock_path(tmp_path, "c1").with_suffix(".held")
    flag.unlink()
    flag.mkdir()
    with (
        caplog.at_level("WARNING", logger="engine.connection_lock"),
        connection_lock(tmp_path, "c1", "run-now", wait_s=0),
        pytest.raises(ConnectionBusyError, match="run run-now "),
    ):
        _other_thread_takes(tmp_path, "c1")
    assert "held without its flag" in caplog.text and flag.name in caplog.text
    with connection_lock(tmp_path, "c1", "run-after", wait_s=0):  # the lock was let go
        pass


def test_the_lock_is_let_go_even_when_letting_go_of_its_flag_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flag is let go first; should that fail, the lock is let go all the same (a long-lived process, the auth
    service running a purge, would otherwise keep the connection busy until it ends)."""
    real = connection_lock_module.release_flock
    calls: list[int] = []

    def release(fd: int, *, clear: bool = False) -> None:
        calls.append(fd)
        if len(calls) == 1:  # the flag's, let go first
            raise OSError(5, "Input/output error")
        real(fd, clear=clear)

    monkeypatch.setattr(connection_lock_module, "release_flock", release)
    with pytest.raises(OSError, match="Input/output"), connection_lock(tmp_path, "c1", "run-now", wait_s=0):
        pass
    monkeypatch.setattr(connection_lock_module, "release_flock", real)
    assert len(calls) == 2, calls
    with connection_lock(tmp_path, "c1", "run-after", wait_s=0):  # the lock was let go
        pass


def _other_thread_takes(root: Path, connection_id: str) -> None:
    """Take the connection's lock from another thread (this one's hold is re-entrant), re-raising its error."""
    errors: list[BaseException] = []

    def take() -> None:
        try:
            with connection_lock(root, connection_id, "run-other", wait_s=0):
                pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]


def test_the_warehouse_lock_file_names_the_run_of_a_connection_step(world: SyncWorld) -> None:
    """Another writer waiting for the DuckDB lock logs who holds it: a connection step names its run there."""
    with hold_connection(world.env, "c1", "run-7"), world.env.warehouse() as wh, wh.batch():
        holder = Path(f"{world.env.warehouse_target}.lock").read_bytes()
    assert b'"owner": "run run-7 of connection c1"' in holder
