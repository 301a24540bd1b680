"""BDX-10: a Bulk run stopped by a throttle longer than ehrsync waits, met on a file download or on the
CapabilityStatement read (not only on the kick-off, ``test_bulk_export_slot``), notes the source's hold on its
``sync_runs`` row as a REST step does (``engine.run_holds.note_source_throttle``): the time the server named,
capped at ``MAX_WAIT_S``, never shortening a longer hold the row already notes. Before, the file's 429 was re-typed
``BulkExportError`` and collected with the run's other file failures, and the metadata read's 429 was not a busy
kick-off: the run failed with no ``not_before``, so the scheduler and Dagster's automatic retry sent the next
request into the throttle the EHR had named."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from engine import run_bulk_export
from engine.batch_defer import MAX_WAIT_S
from engine.models import SyncRun, utcnow
from tests.engine.helpers import SyncWorld, add_fault, connect_backend


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
