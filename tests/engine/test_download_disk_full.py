"""A download whose own write meets a full disk (ENOSPC; EDQUOT, a spent quota, the same) stops the landing as the
free-space check (``EHRSYNC_MIN_FREE_DISK_BYTES``) does: ``InsufficientDiskSpaceError`` naming the folder, nothing
half-written left, the mark untouched, the next run fetches again. The reserve cannot see another process filling
the disk between its checks, nor a reserve of 0.

The disk is really full: the download's temporary file is a link to ``/dev/full``, where every write fails ENOSPC
(the kernel's answer, not a patched write); the HTTP exchange is the sandbox's over a real socket. Before, an
attachment's full disk was one attachment's failure (the next attachment was still fetched, to fail the same way),
and a Bulk file's was one file's: every other file was still fetched, and the run failed with a bare
``OSError: [Errno 28] No space left on device`` naming neither the disk nor what to do.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import InsufficientDiskSpaceError
from connectors.fhir import download
from engine import cursors, run_bulk_export
from engine.models import SyncAttachment
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, connect_backend, connect_patient, sandbox_patients
from tests.engine.job_runs import sync_type

_DEV_FULL = Path("/dev/full")
_GROUP = "grp0"


def _downloads_to_a_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each download's temporary ``.part`` file is a link to /dev/full; every other temporary file is real."""
    real = tempfile.mkstemp

    def mkstemp(suffix: str | None = None, prefix: str | None = None, dir: Any = None, text: bool = False) -> Any:
        if suffix != ".part":
            return real(suffix, prefix, dir, text)
        path = Path(dir) / f"{prefix}{uuid.uuid4().hex}{suffix}"
        path.symlink_to(_DEV_FULL)
        return os.open(path, os.O_WRONLY), str(path)

    assert _DEV_FULL.exists()
    monkeypatch.setattr(download.tempfile, "mkstemp", mkstemp)


def _parts(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*.part")]


def test_an_attachment_write_on_a_full_disk_stops_the_landing_and_the_next_run_stores_it(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patient = sandbox_patients(http, shared_sb)[0]
    conn = connect_patient(world, shared_sb, http=http, patient_id=patient)
    world.env.min_free_disk_bytes = 0  # no reserve: only the write itself can meet the full disk
    _downloads_to_a_full_disk(monkeypatch)
    request_log.clear()
    with pytest.raises(InsufficientDiskSpaceError, match="the disk is full") as raised:
        sync_type(world, conn, "DocumentReference")
    said = str(raised.value)
    assert "No space left on device" in said and str(world.env.zone.root) in said and "run again" in said, said
    assert len(request_log.paths("/fhir/Binary/")) == 1  # the first download stopped the landing
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "DocumentReference") is None
    assert _stored(world, conn) == 0 and not _parts(world.env.zone.root)

    monkeypatch.undo()
    again = sync_type(world, conn, "DocumentReference")
    assert again.error is None and again.attachments > 0 and again.attachments_failed == 0, again
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "DocumentReference") is not None


def test_a_bulk_file_write_on_a_full_disk_stops_the_export_and_the_next_run_resumes_it(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id=_GROUP)
    world.env.min_free_disk_bytes = 0
    world.env.bulk_concurrency = 1  # one download at a time: the count of files fetched is exact
    _downloads_to_a_full_disk(monkeypatch)
    request_log.clear()
    first = run_bulk_export(world.env, conn, "disk-full")
    said = first.error or ""
    assert first.status == "failed", first
    assert said.startswith("insufficient_disk_space: the disk is full"), said
    assert "No space left on device" in said and str(world.env.zone.root) in said, said
    assert len(request_log.paths("/bulk/files")) == 1, "the first file's full disk stops the others' downloads"
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", _GROUP), "*") is None
    assert not _parts(world.env.zone.root)

    monkeypatch.undo()
    second = run_bulk_export(world.env, conn, "disk-freed")
    assert second.status == "completed", second.error
    assert second.resumed


def _stored(world: SyncWorld, conn: str) -> int:
    with world.env.db.session() as session:
        return len(session.scalars(select(SyncAttachment).where(SyncAttachment.connection_id == conn)).all())
