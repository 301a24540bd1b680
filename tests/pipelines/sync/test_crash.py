"""A sync killed (SIGKILL) at any checkpoint, then rerun, leaves the warehouse exactly as one clean run would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.sync import CRASH_ENV, runs, sync_connection
from tests.pipelines.sync.helpers import connect_patient, content_fingerprint, make_environment

REPO = Path(__file__).resolve().parents[3]


def _clone_world(world, src: Path, dest: Path, http):
    """Copy the app DB as it is now (connection + tokens, no sync yet) to run a clean reference elsewhere."""
    dest.mkdir(parents=True)
    world.env.db.dispose()
    for suffix in ("", "-wal", "-shm"):
        if (src / f"app.db{suffix}").exists():
            shutil.copy(src / f"app.db{suffix}", dest / f"app.db{suffix}")
    return make_environment(dest, http=http, cipher_key=world.cipher_key, tenant_id=world.tenant_id)


def _run_child(root: Path, world, conn: str, mode: str, crash_at: str | None, *extra: str):
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    cmd = [sys.executable, "-m", "tests.pipelines.sync.crash_driver", str(root), world.cipher_key.hex()]
    cmd += [world.tenant_id, conn, mode, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("crash_at", ["rest.page_landed:3", "rest.landed:2", "rest.upserted:4", "rest.cursor_saved:6"])
def test_killed_incremental_sync_resumes_to_clean_state(tmp_path, start_sandbox, http, crash_at):
    sb = start_sandbox(patients=1)
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    conn = connect_patient(world, sb, http=http)
    clean = _clone_world(world, root, tmp_path / "clean", http)
    assert sync_connection(clean.env, conn).status == "completed"

    killed = _run_child(root, world, conn, "incremental", crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rerun = sync_connection(world.env, conn)
    assert rerun.status == "completed" and rerun.failed_types == {}, rerun.error
    assert content_fingerprint(world.env.warehouse_target) == content_fingerprint(clean.env.warehouse_target)
    statuses = [r.status for r in runs.history(world.env.db, conn)]
    assert statuses == ["completed", "failed"]  # the killed run is marked abandoned, never left "running"
