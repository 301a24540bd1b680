"""The ``ehrsync`` command answers bad input and unreachable services with one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_connections_list_on_an_unmigrated_database_says_what_to_do(tmp_path: Path) -> None:
    proc = _run("connections", "list", env_extra={"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    assert proc.returncode == 1
    assert "ehrsync db migrate" in proc.stderr and "Traceback" not in proc.stderr


def test_connections_list_after_migrate(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    assert _run("db", "migrate", env_extra=env).returncode == 0
    proc = _run("connections", "list", env_extra=env)
    assert proc.returncode == 0 and proc.stdout == "" and "Traceback" not in proc.stderr


def test_sandbox_mutate_against_nothing_names_the_url() -> None:
    proc = _run("sandbox", "mutate", "--url", "http://127.0.0.1:1", "--update", "1")
    assert proc.returncode == 1
    assert "cannot reach the sandbox at http://127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_patient_count_is_refused_by_the_option_itself() -> None:
    proc = _run("sandbox", "--patients", "0")
    assert proc.returncode == 2 and "--patients" in proc.stderr
