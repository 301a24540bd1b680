"""Attachment downloads of a killed run leave no residue (issue 10): they go to a per-connection directory under
the state directory (``<landing>/.attachment-tmp/<digest>/``), never the system temp dir, and the connection's
next run removes what a SIGKILLed run left there."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from engine import hold_connection
from engine.attachments import attachments_of
from engine.residue import ATTACHMENT_TMP_DIR, attachment_tmp_root, remove_orphans
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, document_with, serve
from tests.engine.helpers import SyncWorld, connect_static, make_environment
from tests.engine.job_runs import run_sync

REPO = Path(__file__).resolve().parents[2]


def _age(path: Path, seconds: float = 600) -> None:
    """Make a leftover look as old as a killed run's (the cleanup spares anything written in the last 60 s)."""
    when = time.time() - seconds
    for p in (path, *path.rglob("*")):
        os.utime(p, (when, when))


def _documents(fake: FakeFhir, release: threading.Event) -> FakeFhir:
    """One DocumentReference whose attachment download answers only once ``release`` is set."""
    doc = document_with([{"url": "Binary/slow", "contentType": "text/plain"}])

    def slow(_path: str, _q: dict[str, list[str]]) -> Reply:
        release.wait(60)
        return 200, {"Content-Type": "text/plain"}, b"a note"

    fake.routes.update(
        {
            "/fhir/DocumentReference": lambda _p, _q: bundle([doc], last_updated="2026-10-20T00:00:00Z"),
            "/fhir/Binary/slow": slow,
        }
    )
    return fake


def _sync_in_child(root: Path, world: SyncWorld, conn: str, system_tmp: Path) -> subprocess.Popen[str]:
    env: dict[str, Any] = {**os.environ, "TMPDIR": str(system_tmp)}
    cmd = [sys.executable, "-m", "tests.engine.crash_driver", str(root), world.cipher_key.hex()]
    cmd += [world.tenant_id, conn, "incremental"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_killed_mid_download_leaves_nothing_in_the_system_temp_dir_and_its_next_run_tidies(
    tmp_path: Path, http: httpx.Client
) -> None:
    """A sync SIGKILLed while an attachment downloads: its download directory is under the landing root of the
    connection (the system temp dir stays empty), and the connection's next completed sync removes it and stores
    the attachment."""
    root = tmp_path / "crashy"
    world = make_environment(root, http=http)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    release = threading.Event()
    with serve(_documents(FakeFhir(), release)) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        child = _sync_in_child(root, world, conn, system_tmp)
        try:
            deadline = time.monotonic() + 120
            while fake.hits("/fhir/Binary/slow") == 0:
                assert child.poll() is None and time.monotonic() < deadline, child.communicate()[1][-2000:]
                time.sleep(0.05)
        finally:
            child.kill()
            child.wait(timeout=10)
        assert list(system_tmp.iterdir()) == []  # before: /tmp/ehrsync-att-* stayed behind for good
        [leftover] = attachment_tmp_root(world.env.zone.root, conn).iterdir()
        _age(leftover)

        release.set()
        report = run_sync(world, conn, types=["DocumentReference"])
    assert report.status == "completed", report.error
    assert report.types["DocumentReference"].attachments == 1
    assert not leftover.exists()
    assert list(attachment_tmp_root(world.env.zone.root, conn).iterdir()) == []  # the run's own dir is gone too
    [stored] = attachments_of(world.env, conn, "DocumentReference", "d1")
    assert world.env.attachments.path_for(stored.sha256).read_bytes() == b"a note"


def test_only_the_connections_old_attachment_dirs_are_removed(world: SyncWorld) -> None:
    """Taking the connection's lock removes its attachment download dirs older than the grace period; a dir
    written just now and another connection's dirs are spared."""
    old = attachment_tmp_root(world.env.zone.root, "c1") / "run-killed"
    fresh = attachment_tmp_root(world.env.zone.root, "c1") / "run-live"
    other = attachment_tmp_root(world.env.zone.root, "c2") / "run-killed"
    for directory in (old, fresh, other):
        directory.mkdir(parents=True)
        (directory / "body").write_bytes(b"partial")
    _age(old)
    _age(other)
    assert old.parent.parent.name == ATTACHMENT_TMP_DIR and "c1" not in old.parent.name  # hashed, not the raw id

    with hold_connection(world.env, "c1", "run-next"):
        assert not old.exists()
        assert fresh.exists() and other.exists()
    assert remove_orphans(world.env.db, world.env.zone.root, "c2").attachment_dirs == 1
    assert not other.exists()
