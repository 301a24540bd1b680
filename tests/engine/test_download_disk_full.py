"""A download whose own write meets a full disk (ENOSPC; EDQUOT, a spent quota, the same) stops the landing as the
free-space check (``EHRSYNC_MIN_FREE_DISK_BYTES``) does: ``InsufficientDiskSpaceError`` naming the folder, nothing
half-written left, the mark untouched, the next run fetches again. The reserve cannot see another process filling
the disk between its checks, nor a reserve of 0.

The disk is really full: the download's temporary file is a link to ``/dev/full``, where every write fails ENOSPC
(the kernel's answer, not a patched write); the HTTP exchange is the sandbox's over a real socket. Before, an
attachment's full disk was one attachment's failure (the next attachment was still fetched, to fail the same way),
and a Bulk file's was one file's: every other file was still fetched, and the run failed with a bare
``OSError: [Errno 28] No space left on device`` naming neither the disk nor what to do.

The final rename can be refused for room too (a folder whose entries need a new block on a full disk: seen on a
full ext4). No file a test can make has a rename the kernel refuses ENOSPC without mounting a filesystem, so that
one case raises the kernel's error from ``os.replace`` of the ``.part`` file, the one call it stands in for.

The engine removes its download folders whatever happened, so whether the partial file was removed is read when
its folder is removed (``_Parts``), not after the run, where it would be gone either way.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import InsufficientDiskSpaceError
from connectors.fhir import download
from engine import bulk_state, cursors, run_bulk_export
from engine.bulk_members import MEMBERS_KEY, members_stream
from engine.models import SyncAttachment
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, connect_backend, connect_patient, sandbox_patients
from tests.engine.job_runs import sync_type
from warehouse import LandingDiskFullError

_DEV_FULL = Path("/dev/full")
_GROUP = "grp0"


@dataclass
class _Parts:
    """The downloads' ``.part`` files, and for each, whether it was still on disk when its folder was removed."""

    made: list[Path] = field(default_factory=list)
    full: list[Path] = field(default_factory=list)  # those linked to /dev/full
    at_cleanup: dict[Path, bool] = field(default_factory=dict)

    def removed_before_cleanup(self) -> bool:
        """Every part's folder was removed, and no part was still there: the download removed it itself."""
        return bool(self.made) and set(self.at_cleanup) == set(self.made) and not any(self.at_cleanup.values())


def _watch_parts(monkeypatch: pytest.MonkeyPatch, full: Callable[[Path], bool] = lambda folder: True) -> _Parts:
    """Record each download's ``.part`` file (a link to /dev/full where ``full(folder)``; every other temporary
    file is real), and whether it is still there when a folder holding it is removed."""
    parts, real_mkstemp, real_rmtree = _Parts(), tempfile.mkstemp, shutil.rmtree

    def mkstemp(suffix: str | None = None, prefix: str | None = None, dir: Any = None, text: bool = False) -> Any:
        if suffix != ".part" or not full(Path(dir)):
            fd, name = real_mkstemp(suffix, prefix, dir, text)
        else:
            name = str(Path(dir) / f"{prefix}{uuid.uuid4().hex}{suffix}")
            Path(name).symlink_to(_DEV_FULL)
            fd = os.open(name, os.O_WRONLY)
            parts.full.append(Path(name))
        if suffix == ".part":
            parts.made.append(Path(name))
        return fd, name

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        for part in parts.made:
            if Path(path) in part.parents:
                parts.at_cleanup[part] = os.path.lexists(part)
        real_rmtree(path, *args, **kwargs)

    assert _DEV_FULL.exists()
    monkeypatch.setattr(download.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    return parts


def _renames_refused_for_room(monkeypatch: pytest.MonkeyPatch, refused: Callable[[Path, Path], bool]) -> None:
    """Each rename ``refused(src, dst)`` picks fails as a full ext4 fails it (the folder's entries need a new block);
    every other rename runs."""
    real = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if refused(Path(src), Path(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _renames_of_parts_refused_for_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``.part`` file's rename onto the download's name is refused for room."""
    _renames_refused_for_room(monkeypatch, lambda src, dst: src.name.endswith(".part"))


def _moves_into_the_store_refused_for_room(monkeypatch: pytest.MonkeyPatch, store: Path) -> None:
    """A rename into the attachment store is refused for room; the copy the store falls back to then meets the same
    full disk at its own rename."""
    _renames_refused_for_room(monkeypatch, lambda src, dst: Path(store) in dst.parents)


def test_an_attachment_the_store_refuses_for_room_stops_the_landing_and_the_next_run_stores_it(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The download landed, but moving it into the store (``warehouse.AttachmentStore.put_file``) is refused for room:
    the disk-full error a landing file's write gets, not one attachment's failure (every later attachment would be
    fetched only to meet the same disk). Before, it was counted and the next attachment was fetched."""
    patient = sandbox_patients(http, shared_sb)[0]
    conn = connect_patient(world, shared_sb, http=http, patient_id=patient)
    world.env.min_free_disk_bytes = 0
    _moves_into_the_store_refused_for_room(monkeypatch, world.env.attachments.root)
    request_log.clear()
    with pytest.raises(LandingDiskFullError, match="the disk is full") as raised:
        sync_type(world, conn, "DocumentReference")
    said = str(raised.value)
    assert "No space left on device" in said and str(world.env.attachments.root) in said and "run again" in said
    assert len(request_log.paths("/fhir/Binary/")) == 1  # the first attachment stopped the landing
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "DocumentReference") is None
    assert _stored(world, conn) == 0
    assert not [p for p in world.env.attachments.root.rglob("*") if p.is_file()]  # no staging copy left behind

    monkeypatch.undo()
    again = sync_type(world, conn, "DocumentReference")
    assert again.error is None and again.attachments > 0 and again.attachments_failed == 0, again


@pytest.mark.parametrize("refused", ["write", "rename"])
def test_an_attachment_refused_for_room_stops_the_landing_and_the_next_run_stores_it(
    refused: str,
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patient = sandbox_patients(http, shared_sb)[0]
    conn = connect_patient(world, shared_sb, http=http, patient_id=patient)
    world.env.min_free_disk_bytes = 0  # no reserve: only the write itself can meet the full disk
    parts = _watch_parts(monkeypatch, full=lambda folder: refused == "write")
    if refused == "rename":
        _renames_of_parts_refused_for_room(monkeypatch)
    request_log.clear()
    with pytest.raises(InsufficientDiskSpaceError, match="the disk is full") as raised:
        sync_type(world, conn, "DocumentReference")
    said = str(raised.value)
    assert "No space left on device" in said and str(world.env.zone.root) in said and "run again" in said, said
    assert len(request_log.paths("/fhir/Binary/")) == 1  # the first download stopped the landing
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "DocumentReference") is None
    assert _stored(world, conn) == 0
    assert len(parts.made) == 1 and parts.removed_before_cleanup(), parts

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
    parts = _watch_parts(monkeypatch)
    request_log.clear()
    first = run_bulk_export(world.env, conn, "disk-full")
    said = first.error or ""
    assert first.status == "failed", first
    assert said.startswith("insufficient_disk_space: the disk is full"), said
    assert "No space left on device" in said and str(world.env.zone.root) in said, said
    assert len(request_log.paths("/bulk/files")) == 1, "the first file's full disk stops the others' downloads"
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", _GROUP), "*") is None
    assert len(parts.made) == 1 and parts.removed_before_cleanup(), parts

    monkeypatch.undo()
    second = run_bulk_export(world.env, conn, "disk-freed")
    assert second.status == "completed", second.error
    assert second.resumed


def test_the_member_id_download_on_a_full_disk_fails_the_run_and_the_next_run_checks_the_members(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id=_GROUP)
    world.env.min_free_disk_bytes = 0
    assert run_bulk_export(world.env, conn, "first").status == "completed"  # the baseline: no member check yet

    def members_job(folder: Path) -> bool:
        with world.env.db.session() as session:
            return bulk_state.job_row(session, folder.name).stream == members_stream(_GROUP)

    parts = _watch_parts(monkeypatch, full=members_job)
    second = run_bulk_export(world.env, conn, "disk-full")
    said = second.error or ""
    assert second.status == "failed" and not second.membership_checked, second
    assert said.startswith("insufficient_disk_space: the disk is full"), said
    assert "No space left on device" in said and str(world.env.zone.root) in said, said
    assert cursors.get_data(world.env.db, conn, members_stream(_GROUP), MEMBERS_KEY) is None
    assert len(parts.full) == 1 and parts.removed_before_cleanup(), parts

    monkeypatch.undo()
    third = run_bulk_export(world.env, conn, "disk-freed")
    assert third.status == "completed" and third.membership_checked, third.error
    assert cursors.get_data(world.env.db, conn, members_stream(_GROUP), MEMBERS_KEY) is not None


def _stored(world: SyncWorld, conn: str) -> int:
    with world.env.db.session() as session:
        return len(session.scalars(select(SyncAttachment).where(SyncAttachment.connection_id == conn)).all())
