"""Helpers for running ``ehrsync`` as an operator does in tests/ehrsync/test_cli_runs.py and test_cli_reconcile.py
(two files so pytest-xdist's ``--dist loadfile`` runs their Dagster runs on two workers)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.engine.helpers import SyncWorld

DROPPED = ("DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL", "DAGSTER_HOME", "EHRSYNC_HOME")


def http_of(world: SyncWorld) -> httpx.Client:
    assert world.env.http is not None
    return world.env.http


def run_cli(world: SyncWorld, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ehrsync ARGS`` over the world's state folder (its app database, warehouse and Dagster home)."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env["EHRSYNC_STATE_DIR"] = str(tmp_path / "state")
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(world.cipher_key).decode()
    env["EHRSYNC_SYNC_OVERLAP_SECONDS"] = "0"  # runs seconds apart: count exactly what changed
    return subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def summary_table(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by first cell (types and ``total``), between its header and the run line (the
    analyst views' line follows it)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["type", "fetched"])
    skip = ("-", "run ", "analyst views")
    rows = [line.split(maxsplit=6) for line in lines[start + 1 :] if line and not line.startswith(skip)]
    return {row[0]: [*row[1:], ""][:6] for row in rows}  # five counts and the note (empty when none)


def one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and all(name in lines[0] for name in names), lines[0]
