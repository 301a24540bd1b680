"""`make ui`: the Dagster UI comes up over a state folder and Ctrl-C stops every process it started
(webserver, daemon and code server run in their own process group; killing only the parent would leave them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ui_serves_then_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ehrsync.cli", "ui", "--state", str(tmp_path / "state"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "ui exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Dagster UI did not come up in 180 s"
            time.sleep(1)
        query = "{ assetNodes { assetKey { path } } }"
        nodes = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30).json()
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes["data"]["assetNodes"]}
        assert {"landing/Observation", "warehouse/Observation", "bulk/export"} <= keys
        started = psutil.Process(proc.pid).children(recursive=True)
        assert len(started) >= 2, "dagster dev starts a webserver and a daemon"

        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        assert proc.wait(timeout=90) == 0
        _gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
