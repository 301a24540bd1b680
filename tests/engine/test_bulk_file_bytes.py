"""Bulk files whose bytes real servers shape differently from our sandbox's default, each through the production
engine over real sockets: files that start with a UTF-8 byte order mark (``bulk_file_bom``, a .NET writer's
default), a file stored gzipped that arrives cut short without ``Content-Encoding`` (``bulk_gzip_cut``), and
one that inflates ~1000:1 (``bulk_gzip_bomb``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import cursors, run_bulk_export, runs
from sandbox import SandboxServer
from tests.engine.helpers import add_fault, connect_backend, content_fingerprint, make_environment
from tests.inflation import count_inflated

GROUP = "grp0"
STREAM = cursors.bulk_stream("group", GROUP)


def _content(sb: SandboxServer, root: Path, http: httpx.Client, run_id: str) -> list[tuple[Any, ...]]:
    """What one export of ``sb`` lands, as it is set now, into a new world under ``root``."""
    world = make_environment(root / run_id, http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    report = run_bulk_export(world.env, conn, run_id)
    assert report.status == "completed", report.error
    assert sum(r.quarantined for r in report.types.values()) == 0, "no resource is quarantined"
    assert not report.count_mismatches
    return content_fingerprint(world.env.warehouse_target, with_connection=False)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_files_starting_with_a_byte_order_mark_land_every_resource_bdx20(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, gzipped: bool
) -> None:
    """RFC 8259 lets a parser ignore a BOM, and .NET writers put one first: the first resource of every file used
    to be quarantined ("BOM is not supported") while ``_since`` moved past it."""
    sb = start_sandbox(bulk_gzip=gzipped)
    clean = _content(sb, tmp_path, http, "clean")
    sb.admin.settings(bulk_file_bom=True)
    assert _content(sb, tmp_path, http, "bom") == clean


def test_an_error_file_starting_with_a_byte_order_mark_still_holds_since_bdx22(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client
) -> None:
    """The fatal OperationOutcome on an error file's first line reports a type that never arrived; with a BOM before
    it the line was set aside as unusable and ``_since`` moved past the missing Observations."""
    sb = start_sandbox(bulk_file_bom=True)
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_error_file", resource_type="Observation", path="/fhir/Group", times=1)
    report = run_bulk_export(world.env, conn, "bom-errors")
    assert report.status == "partial" and report.incomplete_types == ["Observation"], report.error
    assert report.error_issues.get("fatal") == 1
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None, "_since never passes data not received"


def test_a_stored_gzip_file_cut_short_is_fetched_again_bdx20(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, request_log: Any
) -> None:
    """A ``.ndjson.gz`` served as stored (no ``Content-Encoding``) whose gzip stream stops early: its
    ``Content-Length`` matches, so only the stream shows the cut. It used to reach landing and escape the run as an
    untyped EOFError (a traceback, the run left ``running``); now it is a truncation, fetched again."""
    sb = start_sandbox()
    clean = _content(sb, tmp_path, http, "clean")
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_gzip_cut", path="/bulk/files/", times=1)
    request_log.clear()
    report = run_bulk_export(world.env, conn, "cut-once")
    assert report.status == "completed", report.error
    files = request_log.paths("/bulk/files")
    assert len(files) == len({u.path for u in files}) + 1, "the cut file was fetched once more"
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == clean


def test_a_stored_gzip_file_cut_on_every_attempt_fails_by_name_and_keeps_since(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client
) -> None:
    sb = start_sandbox()
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_gzip_cut", path="/bulk/files/", times=None)
    report = run_bulk_export(world.env, conn, "cut-always")
    assert report.status == "failed" and report.error is not None
    assert "bulk_file_truncated" in report.error and "gzip" in report.error
    assert runs.require(world.env.db, "cut-always").status == "failed"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None
    sb.admin.clear_faults()
    again = run_bulk_export(world.env, conn, "after")
    assert again.status == "completed" and again.resumed, again.error


@pytest.mark.parametrize("caught_by", ["download-check", "landing"])
def test_a_stored_gzip_bomb_fails_by_name_inflating_no_more_than_the_limit_bdx17(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, monkeypatch: pytest.MonkeyPatch, caught_by: str
) -> None:
    """``bulk_gzip_bomb``: a file stored gzipped, served as stored (no Content-Encoding), ~1 MB that inflates to
    1 GiB. The download counted its compressed bytes only, so it passed the per-file limit, and the truncation
    check and landing each inflated all of it (the file landed, its NULs quarantined as one line). Now it fails by
    name as over EHRSYNC_BULK_MAX_FILE_BYTES, no gzip file is inflated past the limit, ``_since`` stays and the
    next run resumes. ``landing``: with the download's check out of the way, landing holds the same limit."""
    if caught_by == "landing":
        monkeypatch.setattr("connectors.bulk.files.truncation_of", lambda *args, **kwargs: None)
    sb = start_sandbox()
    world = make_environment(tmp_path / "w", http=http)
    world.env.bulk_max_file_bytes = limit = 4 * 1024 * 1024  # every file of the sandbox is far smaller
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_gzip_bomb", path="/bulk/files/", times=1)
    inflated = count_inflated(monkeypatch)
    report = run_bulk_export(world.env, conn, "bomb")
    assert report.status == "failed" and report.error is not None
    assert "bulk_file_too_large" in report.error and f"{limit}-byte limit per file" in report.error
    assert "/bulk/files/" in report.error and "EHRSYNC_BULK_MAX_FILE_BYTES" in report.error
    assert 0 < max(inflated.values()) <= limit + 4, "no gzip file was inflated past the limit"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is None
    again = run_bulk_export(world.env, conn, "after")
    assert again.status == "completed" and again.resumed, again.error
