"""`make ui`: the Dagster UI comes up over a state folder and Ctrl-C, or SIGTERM, stops every process it started
(webserver, daemon and code server run in their own process group; killing only the parent would leave them)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from ehrsync.dagster_instance import WORKSPACE_YAML, ui_command
from engine.settings import PipelineSettings

# The processes these tests start inherit our stop signals: start them as from a terminal, however pytest runs.
pytestmark = pytest.mark.usefixtures("stop_signals_as_from_a_terminal")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_ui(tmp_path: Path, port: int, *, background: bool = False) -> subprocess.Popen[bytes]:
    """``ehrsync ui`` on ``port`` with a state folder (and so a DAGSTER_HOME) of its own; ``background`` starts it
    as a non-interactive shell's ``ehrsync ui &`` does, with SIGINT ignored."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME")}
    return subprocess.Popen(
        [sys.executable, "-m", "ehrsync.cli", "ui", "--state", str(tmp_path / "state"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_ignore_sigint if background else None,  # the test starts no threads
    )


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "ui exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the Dagster UI did not come up in 180 s"
        time.sleep(1)


def test_ui_loads_the_code_location_by_module_not_from_the_repository_workspace_yaml(tmp_path: Path) -> None:
    """An installed wheel has no workspace.yaml beside the package: the UI loads the module the repo's file names."""
    argv, _env = ui_command(PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)}))
    dev_args = argv[argv.index("dev") + 1 :]
    assert "-w" not in dev_args and str(WORKSPACE_YAML) not in dev_args
    (location,) = yaml.safe_load(WORKSPACE_YAML.read_text())["load_from"]
    assert dev_args[dev_args.index("-m") + 1] == location["python_module"]


@pytest.mark.slow
def test_ui_serves_then_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start_ui(tmp_path, port)
    try:
        _wait_until_serving(proc, port)
        query = "{ assetNodes { assetKey { path } } }"
        nodes = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30).json()
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes["data"]["assetNodes"]}
        assert {"landing/Observation", "warehouse/Observation", "bulk/export"} <= keys
        # a new folder's app database is migrated before the daemon's sensors read it (they failed every tick)
        with sqlite3.connect(tmp_path / "state" / "app.db") as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"alembic_version", "connections", "note_outbox"} <= tables
        started = psutil.Process(proc.pid).children(recursive=True)
        assert len(started) >= 2, "dagster dev starts a webserver and a daemon"

        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        assert proc.wait(timeout=90) == 0
        _gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_ui_started_in_the_background_stops_every_process_on_sigterm(tmp_path: Path) -> None:
    """Issue 11: ``ehrsync ui &`` then ``kill`` used to leave the UI and all of Dagster's processes running (the
    SIGINT it forwarded was ignored, inherited from the shell), and ``ehrsync ui`` itself never returned."""
    port = _free_port()
    proc = _start_ui(tmp_path, port, background=True)
    try:
        _wait_until_serving(proc, port)
        started = psutil.Process(proc.pid).children(recursive=True)
        assert len(started) >= 2, "dagster dev starts a webserver and a daemon"

        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what `kill PID` sends
        assert proc.wait(timeout=90) == 0
        _gone, alive = psutil.wait_procs(started, timeout=10)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        assert time.monotonic() - stopped_at < 90
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in psutil.Process().children(recursive=True):
            child.kill()
