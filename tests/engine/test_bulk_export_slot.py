"""Oracle Health runs one Bulk export per client and tenant and answers a second concurrent kick-off 429 ``throttled``
(vendors.md §3; BDX-07). The sandbox does so with ``bulk_max_jobs_per_client=1`` (with or without Retry-After).

A kick-off still throttled after the retry policy's attempts ends the run ``failed`` with ``bulk_export_busy``
naming the throttle: no job recorded, ``_since`` unchanged, the server's Retry-After (5 min when it named none, as
for a REST throttle) noted as the run's ``not_before`` (the scheduler asks for nothing before it). A vendor
declaring ``one_export_per_client`` gets a shared ``ehrsync/export_slot`` run tag, and an export started outside
the daemon's queue is refused before its kick-off while another connection of the slot has one in progress."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from engine import cursors, run_bulk_export
from engine.batch_defer import DEFAULT_WAIT_S
from engine.connection_info import load_connection
from engine.connection_snapshots import read_connection
from engine.models import BulkJob, SyncRun, utcnow
from engine.run_tags import EXPORT_SLOT_TAG, connection_run_tags
from store.models import Connection
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, _add_connection, add_fault, connect_backend

SECOND = "grp1"


def _sibling(world: SyncWorld, connection_id: str, **changes: Any) -> str:
    """Another group connection of the same client at the same FHIR base (a second Oracle group of one tenant)."""
    skip = {"id", "tenant_id", "issuer", "created_at", "updated_at"}
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        columns = {c.name: getattr(row, c.name) for c in Connection.__table__.columns if c.name not in skip}
    return _add_connection(world, **{**columns, "group_id": SECOND, **changes})


def _jobs(world: SyncWorld, connection_id: str) -> list[BulkJob]:
    with world.env.db.session() as session:
        return list(session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)))


def _run_row(world: SyncWorld, run_id: str) -> SyncRun:
    with world.env.db.session() as session:
        row = session.get(SyncRun, run_id)
        assert row is not None
        return row


def test_bdx07_a_kick_off_throttled_by_a_running_export_fails_busy_keeps_since_and_notes_retry_after(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox(bulk_max_jobs_per_client=1, bulk_throttle_s=3.0, bulk_retry_after_s=1)
    first = connect_backend(world, sb, http=http, group_id="grp0")
    second = _sibling(world, first)
    client = world.env.bulk_client(load_connection(world.env.db, first))
    running = client.kickoff("group", group_id="grp0", types=["Patient"])  # the export another run has going
    try:
        for run_id, retry_after in (("said", True), ("silent", False)):
            sb.admin.settings(bulk_busy_retry_after=retry_after)
            before = utcnow()
            report = run_bulk_export(world.env, second, run_id)
            assert report.status == "failed" and report.error is not None
            assert report.error.startswith("bulk_export_busy: bulk kick-off throttled, no export was started")
            assert "HTTP 429 (issues: error throttled)" in report.error
            row = _run_row(world, run_id)
            assert row.status == "failed" and row.error == report.error
            assert row.not_before is not None  # the scheduler (and an automatic retry) asks for nothing before it
            held = row.not_before.replace(tzinfo=before.tzinfo)
            if retry_after:  # the server's Retry-After (1 s) is when the scheduler may ask again
                assert before < held < utcnow() + timedelta(seconds=2)
            else:  # it named no time: held as a REST step's silent throttle is (before, nothing: straight back)
                wait = timedelta(seconds=DEFAULT_WAIT_S)
                assert before + wait <= held <= utcnow() + wait, (before, held)
        assert not _jobs(world, second)
        assert cursors.get_mark(world.env.db, second, cursors.bulk_stream("group", SECOND), "*") is None
    finally:
        client.cancel(running)
        client.close()


def test_bdx07_one_export_per_client_vendor_runs_share_a_slot_tag_and_an_in_process_export_waits_for_the_other(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """Cerner group connections of one client and base share ``ehrsync/export_slot`` (dagster.yaml: one run at once);
    another client, or a generic vendor, has none. A second export started in-process (``ehrsync sync``) while the
    first still polls is refused before its kick-off, though the server (2 jobs per client here) would take it."""
    sb = start_sandbox(bulk_throttle_s=2.5)  # the first export polls for seconds: room for two refusals under load
    first = connect_backend(world, sb, http=http, group_id="grp0", provider_id="cerner")
    second = _sibling(world, first)
    other_client = _sibling(world, first, client_id="another-client")
    generic = _sibling(world, first, provider_id="generic")
    base = load_connection(world.env.db, first).fhir_base
    slashed = _sibling(world, first, fhir_base=base.rstrip("/") + "/")  # the same base, spelt with its slash
    slot = connection_run_tags(read_connection(world.env.db, first), "schedule").get(EXPORT_SLOT_TAG)
    assert slot is not None and slot.startswith("cerner-") and len(slot) <= 63
    assert connection_run_tags(read_connection(world.env.db, second), "api")[EXPORT_SLOT_TAG] == slot
    assert connection_run_tags(read_connection(world.env.db, slashed), "api")[EXPORT_SLOT_TAG] == slot
    assert connection_run_tags(read_connection(world.env.db, other_client), "api")[EXPORT_SLOT_TAG] != slot
    assert EXPORT_SLOT_TAG not in connection_run_tags(read_connection(world.env.db, generic), "api")

    reports: list[Any] = []
    exporting = threading.Thread(target=lambda: reports.append(run_bulk_export(world.env, first, "first")))
    exporting.start()
    try:
        deadline = time.monotonic() + 60
        while not _jobs(world, first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _jobs(world, first) and _jobs(world, first)[0].status == "polling"
        busy = run_bulk_export(world.env, second, "second")
        assert busy.status == "failed" and busy.error is not None
        assert busy.error.startswith(f"bulk_export_busy: no export was started: connection {first} ")
        slashed_run = run_bulk_export(world.env, slashed, "slashed")  # the tag's slot, so the check's too
        assert slashed_run.status == "failed" and slashed_run.error is not None
        assert slashed_run.error.startswith(f"bulk_export_busy: no export was started: connection {first} ")
        assert not request_log.paths(f"/fhir/Group/{SECOND}/$export") and not _jobs(world, second)
        assert not _jobs(world, slashed)
    finally:
        exporting.join(timeout=120)
    assert reports and reports[0].status == "completed", reports
    again = run_bulk_export(world.env, second, "after")  # the slot is free once the first export is done
    assert again.status == "completed", again.error


@pytest.mark.parametrize(
    "said",
    ["31536000", "100000000000000", format_datetime(datetime.now(UTC) + timedelta(days=2), usegmt=True)],
    ids=["a_year", "past_a_datetime", "an_http_date_two_days_ahead"],
)
def test_bdx07_a_kick_off_throttled_for_longer_than_a_day_holds_the_connection_a_day(
    shared_sb: Any, world: SyncWorld, http: httpx.Client, said: str
) -> None:
    """BDX-07/BDX-10: a kick-off refused 429 whose Retry-After is a year, past what a datetime holds (a server's
    mistake) or an HTTP date two days ahead holds the connection a day at most, as a throttle met by a REST step or
    a batch member does (``engine.batch_defer.MAX_WAIT_S``). Before, the year was noted as ``not_before`` (the
    scheduler asked for nothing for a year) and 10^14 s raised ``OverflowError`` out of the run, noting no hold."""
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    add_fault(http, shared_sb, "429", path="/fhir/Group/grp0/$export", retry_after=said, times=None)
    before = utcnow()
    report = run_bulk_export(world.env, conn, "throttled")
    assert report.error is not None and report.error.startswith("bulk_export_busy: "), report.error
    row = _run_row(world, "throttled")
    assert row.status == "failed" and row.not_before is not None
    until = row.not_before.replace(tzinfo=before.tzinfo)
    assert before + timedelta(hours=23) < until <= utcnow() + timedelta(days=1)
    assert not _jobs(world, conn)
