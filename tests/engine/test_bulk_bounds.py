"""Bulk kick-off, status and cancel answers are JSON bodies bounded like FHIR REST ones (issue 10), over a real
socket against the sandbox's body faults:

- a status URL answering an endless manifest fails the run with ``response_too_large`` naming the URL and the
  limit (EHRSYNC_MAX_RESPONSE_BYTES); the job stays ``polling`` and the next run resumes the same status URL
  (BDX-08/09);
- a status URL trickling its manifest fails with ``request_deadline_exceeded`` (EHRSYNC_REQUEST_DEADLINE_S),
  the job resumable in the same way;
- files trickling below the low-speed limit fail with ``bulk_file_too_slow`` (EHRSYNC_BULK_LOW_SPEED_*), resumable.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import select

from connectors.bulk import BulkClient
from connectors.fhir._bounds import BodyBounds
from connectors.transport import LowSpeedLimit
from engine import BulkReport, cursors, run_bulk_export
from engine.models import BulkJob
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend

GROUP = "grp0"
LIMIT = 256 * 1024


def _jobs(world: SyncWorld, connection_id: str) -> list[BulkJob]:
    with world.env.db.session() as session:
        rows = session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)).all()
        return sorted(rows, key=lambda j: j.requested_at)


def _export_while_trickling(
    world: SyncWorld, sb: SandboxServer, http: httpx.Client, conn: str, run_id: str, path: str, delay_s: float
) -> tuple[BulkReport, float]:
    """One export while every answer under ``path`` trickles its body a byte per ``delay_s``; its report and
    seconds. The fault is cleared after, whatever happened."""
    add_fault(http, sb, "trickle", path=path, delay_s=delay_s, times=None)
    started = time.monotonic()
    try:
        return run_bulk_export(world.env, conn, run_id), time.monotonic() - started
    finally:
        sb.admin.clear_faults()


def _resumes_at_the_same_status_url(world: SyncWorld, conn: str, request_log: RequestLog, job: BulkJob) -> None:
    request_log.clear()
    again = run_bulk_export(world.env, conn, "resumed")
    assert again.status == "completed", again.error
    assert again.resumed and again.job_id == job.id
    assert not request_log.paths(f"/fhir/Group/{GROUP}/$export"), "no second kick-off"
    polled = {str(u) for u in request_log.paths("/bulk/status")}
    assert polled == {job.status_url}, "the next run polls the same status URL"
    assert len(_jobs(world, conn)) == 1


def test_huge_manifest_fails_with_response_too_large_and_the_job_resumes_bdx08(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(LIMIT))
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    add_fault(http, shared_sb, "huge_body", path="/bulk/status")  # the first poll answers a 256 MiB "manifest"
    started = time.monotonic()
    first = run_bulk_export(world.env, conn, "huge-manifest")
    assert time.monotonic() - started < 20, "stopped at the limit, not after reading 256 MiB"
    assert first.status == "failed" and first.error is not None
    (job,) = _jobs(world, conn)
    assert first.error.startswith(f"response_too_large: GET {job.status_url}"), first.error
    assert f"{LIMIT}-byte response limit (EHRSYNC_MAX_RESPONSE_BYTES)" in first.error
    assert job.status == "polling", "an oversized answer says nothing about the job: it stays resumable"
    assert not request_log.paths("/bulk/status", method="DELETE"), "a job that may be alive is not cancelled"
    _resumes_at_the_same_status_url(world, conn, request_log, job)


def test_trickled_manifest_fails_with_request_deadline_and_the_job_resumes(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 s, not 1: the deadline bounds every request of the run, and a kick-off answered in over a second on a
    # busy CI machine failed the run before any job existed; the trickled manifest still needs far longer
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "5")
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    # every poll, one byte/0.2 s
    first, took = _export_while_trickling(world, shared_sb, http, conn, "trickled-manifest", "/bulk/status", 0.2)
    assert took < 30, "the deadline ends the request, not the server"
    assert first.status == "failed" and first.error is not None
    (job,) = _jobs(world, conn)
    assert first.error.startswith(f"request_deadline_exceeded: GET {job.status_url} was still sending after 5 s")
    assert job.status == "polling"
    assert not request_log.paths("/bulk/status", method="DELETE")
    _resumes_at_the_same_status_url(world, conn, request_log, job)


def test_a_kick_off_answered_after_the_deadline_fails_naming_it_and_records_no_job(
    shared_sb: SandboxServer,
    world: SyncWorld,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kick-off whose headers take longer than EHRSYNC_REQUEST_DEADLINE_S is cut there and named as the
    deadline (before, ``ReadTimeout``: httpx's own 30 s never ran out, so the message misled); it is not sent
    again (a kick-off may have started a job), no job is recorded, and the next run kicks off afresh.

    5 s, not 1: the deadline bounds every request of the run (token grant, discovery), and on a busy CI machine
    an unfaulted one may take over a second; the kick-off held back 20 s still outlives it by far."""
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "5")
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    kick_off = f"/fhir/Group/{GROUP}/$export"
    add_fault(http, shared_sb, "slow", path=kick_off, delay_s=20.0)
    request_log.clear()
    first = run_bulk_export(world.env, conn, "slow-kick-off")
    assert first.status == "failed" and first.error is not None
    assert first.error.startswith("request_deadline_exceeded: GET "), first.error
    assert f"{kick_off} got no complete answer within 5 s (EHRSYNC_REQUEST_DEADLINE_S) on 1 attempt" in first.error
    assert len(request_log.paths(kick_off)) == 1 and not _jobs(world, conn)
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "30")
    again = run_bulk_export(world.env, conn, "after-slow-kick-off")
    assert again.status == "completed", again.error
    assert not again.resumed and len(_jobs(world, conn)) == 1


def test_bulk_client_reads_its_bounds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built like FhirClient: EHRSYNC_MAX_RESPONSE_BYTES / EHRSYNC_REQUEST_DEADLINE_S unless given."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", "12345")
    monkeypatch.setenv("EHRSYNC_REQUEST_DEADLINE_S", "7")
    client = BulkClient("https://ehr.example/fhir", None)
    try:
        assert (client.bounds.max_bytes, client.bounds.deadline_s) == (12345, 7.0)
    finally:
        client.close()
    given = BodyBounds(10, 1.0)
    client = BulkClient("https://ehr.example/fhir", None, bounds=given)
    try:
        assert client.bounds is given
    finally:
        client.close()


def test_trickled_file_fails_with_bulk_file_too_slow_and_the_next_run_lands_it(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    """A file body is held to the low-speed limit, not to the request deadline (a big file streams for longer
    than any deadline): every file trickling ~100 B/s against 5,000 B/s over 0.3 s fails the run by name within
    seconds, the cursor holds, and the job resumes once the server is well (the files were never received)."""
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    usual = world.env.bulk_low_speed
    world.env.bulk_low_speed = LowSpeedLimit(5000, 0.3)
    first, took = _export_while_trickling(world, shared_sb, http, conn, "trickled-files", "/bulk/files", 0.01)
    assert took < 30, "the limit ends each download, not the server"
    assert first.status == "failed" and first.error is not None
    assert "bulk file(s) failed; the next run resumes them" in first.error, first.error
    assert "bulk_file_too_slow: bulk file " in first.error and "arrived too slowly on each of 3 attempts" in first.error
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", GROUP), "*") is None
    (job,) = _jobs(world, conn)
    # the well server under the usual limit: 5,000 B/s over 0.3 s would also cut a small file whose body a
    # loaded machine delivers a few tenths of a second after its headers
    world.env.bulk_low_speed = usual
    second = run_bulk_export(world.env, conn, "well-again")
    assert second.status == "completed", second.error
    assert second.resumed and second.job_id == job.id
