"""A sync killed (SIGKILL) at any checkpoint, then rerun, leaves the warehouse exactly as one clean run would.

Both the killed run (in a child process) and the rerun are production's Dagster job, run in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine import CRASH_ENV, runs
from tests.engine.helpers import connect_patient, content_fingerprint, make_environment
from tests.engine.job_runs import run_sync

REPO = Path(__file__).resolve().parents[2]
# Enough types for every kill point below (the sixth saved mark), and the resources they reference.
TYPES = ["Patient", "AllergyIntolerance", "Condition", "Encounter", "Immunization", "Observation", "Procedure"]


def _run_child(root: Path, world, conn: str, mode: str, crash_at: str | None, *extra: str):
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    cmd = [sys.executable, "-m", "tests.engine.crash_driver", str(root), world.cipher_key.hex()]
    cmd += [world.tenant_id, conn, mode, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def clean_sync_content(module_sandbox, tmp_path_factory):
    with httpx.Client(timeout=30.0) as http:
        clean = make_environment(tmp_path_factory.mktemp("clean"), http=http)
        conn = connect_patient(clean, module_sandbox, http=http)
        assert run_sync(clean, conn, types=TYPES).status == "completed"
    return content_fingerprint(clean.env.warehouse_target, with_connection=False)


# Mid-landing, between upsert and cursor commit, and after some types completed (their references queued).
@pytest.mark.parametrize("crash_at", ["rest.page_landed:3", "rest.upserted:4", "rest.cursor_saved:6"])
def test_killed_incremental_sync_resumes_to_clean_state(tmp_path, shared_sb, clean_sync_content, http, crash_at):
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    conn = connect_patient(world, shared_sb, http=http)

    killed = _run_child(root, world, conn, "incremental", crash_at, ",".join(TYPES))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rerun = run_sync(world, conn, types=TYPES)
    assert rerun.status == "completed" and rerun.failed_types == {}, rerun.error
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == clean_sync_content
    statuses = [r.status for r in runs.history(world.env.db, conn)]
    assert statuses == ["completed", "abandoned"]  # the killed run is closed as abandoned, never left "running"
