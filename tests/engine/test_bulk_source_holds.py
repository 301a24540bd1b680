"""BDX-10: a Bulk run stopped by a throttle longer than ehrsync waits, met on a file download or on the
CapabilityStatement read (not only on the kick-off, ``test_bulk_export_slot``), notes the source's hold on its
``sync_runs`` row as a REST step does (``engine.run_holds.note_source_throttle``): the time the server named,
capped at ``MAX_WAIT_S``, never shortening a longer hold the row already notes. Before, the file's 429 was re-typed
``BulkExportError`` and collected with the run's other file failures, and the metadata read's 429 was not a busy
kick-off: the run failed with no ``not_before``, so the scheduler and Dagster's automatic retry sent the next
request into the throttle the EHR had named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from engine import run_bulk_export
from engine.batch_defer import MAX_WAIT_S
from engine.models import BulkJob, SyncRun, utcnow
from tests.engine.helpers import SyncWorld, add_fault, connect_backend, make_environment


def _not_before(world: SyncWorld, run_id: str) -> Any:
    with world.env.db.session() as session:
        row = session.get(SyncRun, run_id)
        assert row is not None and row.status == "failed", row
        return None if row.not_before is None else row.not_before.replace(tzinfo=utcnow().tzinfo)


@pytest.mark.parametrize("status", ["429", "503"])
def test_bdx10_a_file_download_throttled_past_the_clamp_notes_the_sources_hold(
    shared_sb: Any, world: SyncWorld, http: httpx.Client, status: str
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    add_fault(http, shared_sb, status, path="/bulk/files", retry_after="3600", times=None)
    before = utcnow()
    report = run_bulk_export(world.env, conn, "files-throttled")
    assert report.status == "failed" and report.error is not None and "bulk file(s) failed" in report.error
    until = _not_before(world, "files-throttled")
    assert until is not None, "the file's Retry-After was lost: no hold noted"
    assert before + timedelta(minutes=59) < until <= utcnow() + timedelta(hours=1)


def test_bdx10_a_throttled_capability_read_notes_the_hold_capped_and_never_shortens_a_longer_one(
    shared_sb: Any, world: SyncWorld, http: httpx.Client
) -> None:
    """A system-level export reads the CapabilityStatement first: its 429 of a year holds the connection a day (the
    cap); a second failure of the same row naming a shorter time leaves the day standing."""
    conn = connect_backend(world, shared_sb, http=http)  # a backend connection: system-level export
    add_fault(http, shared_sb, "429", path="/fhir/metadata", retry_after="31536000", times=None)
    before = utcnow()
    report = run_bulk_export(world.env, conn, "metadata-throttled")
    assert report.status == "failed" and report.error is not None and report.error.startswith("rate_limited")
    until = _not_before(world, "metadata-throttled")
    assert until is not None, "the CapabilityStatement read's Retry-After was lost: no hold noted"
    assert before + timedelta(hours=23) < until <= utcnow() + timedelta(seconds=MAX_WAIT_S)

    shared_sb.admin.clear_faults()
    add_fault(http, shared_sb, "429", path="/fhir/metadata", retry_after="3600", times=None)
    again = run_bulk_export(world.env, conn, "metadata-throttled")  # the same row, failing again
    assert again.status == "failed", again
    assert _not_before(world, "metadata-throttled") == until


def test_bdx10_a_later_manifest_page_throttled_past_the_clamp_notes_the_hold(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client
) -> None:
    """A later page of a paged manifest throttled past the clamp fails the run ``bulk_status_unavailable`` (the
    job stays ``polling``, resumed by the next run), and the page's Retry-After, its cause, is noted as the run's
    hold. (The status URL's own 429 is no failure: it is paced within the run, "poll slower", BDX-09.)"""
    sb = start_sandbox(bulk_manifest_page_size=2, bulk_lines_per_file=5)
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id="grp0")
    add_fault(http, sb, "503", path="/bulk/status/", retry_after="", times=None)  # a hiccup: the job is saved
    assert run_bulk_export(world.env, conn, "saved").status == "failed"
    with world.env.db.session() as session:
        (job,) = session.execute(select(BulkJob)).scalars().all()
        assert job.status == "polling" and job.status_url is not None
        status_path = httpx.URL(job.status_url).path
    sb.admin.clear_faults()
    add_fault(http, sb, "429", path=f"{status_path}/page/", retry_after="3600", times=None)
    before = utcnow()
    report = run_bulk_export(world.env, conn, "page-throttled")
    assert report.error is not None and report.error.startswith("bulk_status_unavailable"), report.error
    until = _not_before(world, "page-throttled")
    assert until is not None, "the manifest page's Retry-After was lost: no hold noted"
    assert before + timedelta(minutes=59) < until <= utcnow() + timedelta(hours=1)


def test_bdx10_a_file_throttled_past_the_clamp_keeps_its_hold_when_a_full_disk_fails_the_run(
    shared_sb: Any, world: SyncWorld, http: httpx.Client
) -> None:
    """The first file meets a 429 of an hour, the next a landing disk below its reserve: the run fails
    ``insufficient_disk_space`` (the disk is what to fix), and still notes the hour the source named. Before, the
    disk's error replaced the file failures' ``BulkExportError`` raised from the throttle, so the hold was lost and
    the next run (once the disk was freed, or Dagster's automatic retry) asked the throttled source at once."""
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    world.env.bulk_concurrency = 1  # the files in order: the throttled one first, then the disk's
    add_fault(http, shared_sb, "429", path="/bulk/files", retry_after="3600", times=1)
    world.env.min_free_disk_bytes = 1 << 60  # an exabyte: no disk has that much free
    before = utcnow()
    report = run_bulk_export(world.env, conn, "throttled-then-full")
    assert report.status == "failed" and (report.error or "").startswith("insufficient_disk_space"), report.error
    assert report.failed_files == 2, report  # the throttled file, then the disk's: no later file fetched
    until = _not_before(world, "throttled-then-full")
    assert until is not None, "the file's Retry-After was lost behind the full disk: no hold noted"
    assert before + timedelta(minutes=59) < until <= utcnow() + timedelta(hours=1)
