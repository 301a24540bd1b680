import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest


@pytest.mark.postgres
def test_throwaway_postgres_accepts_connections(postgres_url: str) -> None:
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 1 + 1").fetchone() == (2,)


def test_a_killed_test_process_leaves_no_postgres_running(tmp_path: Path) -> None:
    """A test run killed outright (a CI timeout, SIGKILL) runs no ``finally``: the watchdog throwaway_postgres
    starts beside the server stops it and removes its folder (before, every such kill left a server running)."""
    started = tmp_path / "started.json"
    env = {k: v for k, v in os.environ.items() if k != "EHRSYNC_TEST_DATABASE_URL"}  # the child starts its own
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(started)], cwd=Path(__file__).parents[1], env=env)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), "the child never started its server"
        port, data = json.loads(started.read_text())
        assert psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres").close() is None
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 60
    while Path(data).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(data).exists(), "the server's folder outlived the killed process"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", connect_timeout=2)


# The killed process: starts a throwaway server, says where, then waits to be killed.
_HOLDER = """
import json, sys, time
from pathlib import Path
from tests.pgserver import throwaway_postgres
with throwaway_postgres() as server:
    Path(sys.argv[1]).write_text(json.dumps([server.port, str(server.data)]))
    time.sleep(600)
"""
