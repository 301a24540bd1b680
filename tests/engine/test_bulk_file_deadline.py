"""A Bulk file kept just above the low-speed limit is bounded by its deadline (EHRSYNC_BULK_FILE_DEADLINE_S), over
a real socket against the sandbox's ``trickle`` fault at a steady pace (``chunk_bytes`` every ``delay_s``).

Before the deadline, a server trickling each file just above the low-speed limit kept the sync busy until the
file's size limit (10 GiB at 1 KiB/s: months), and the Bulk steps run without the step budget. Now each file whose
download outlives the deadline fails by name (``bulk_file_deadline_exceeded``) naming the variable and the limit,
the job is kept and no cursor moves, and the next run with a healthy server resumes the job, fetching only the
files that were not landed, and completes with every row.
"""

from __future__ import annotations

import time
from collections import Counter

import duckdb
import httpx
from sqlalchemy import select

from connectors.fhir import RetryPolicy
from connectors.transport import LowSpeedLimit
from engine import BulkReport, cursors, run_bulk_export
from engine.models import BulkJob, BulkJobFile
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend

GROUP = "grp0"
DEADLINE_S = 2.0
# 16 bytes every 0.05 s: ~320 B/s at best, steadily above the low-speed limit below (4 B/s over 0.5 s, checked
# many times a file: one piece keeps a window of up to 4 s, so a loaded machine's pauses do not trip it), and far
# too slow for the deadline: the sandbox's files (about 3 to 60 KB) would take 10 s to 3 minutes each
PACE = {"chunk_bytes": 16, "delay_s": 0.05}
LOW_SPEED = LowSpeedLimit(4, 0.5)


def _files(world: SyncWorld, job_id: str) -> list[BulkJobFile]:
    with world.env.db.session() as session:
        rows = session.scalars(select(BulkJobFile).where(BulkJobFile.job_id == job_id).order_by(BulkJobFile.id))
        return list(rows.all())


def _warehouse_rows(world: SyncWorld) -> Counter[str]:
    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        found = con.execute("SELECT resource_type, count(*) FROM fhir_resources GROUP BY resource_type").fetchall()
    finally:
        con.close()
    return Counter({str(t): int(n) for t, n in found})


def test_files_kept_above_the_low_speed_limit_fail_at_their_deadline_and_the_next_run_lands_every_row(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    world.env.bulk_low_speed, world.env.bulk_file_deadline_s = LOW_SPEED, DEADLINE_S
    add_fault(http, shared_sb, "trickle", path="/bulk/files", times=None, **PACE)
    first, took = _timed_export(world, shared_sb, conn, "kept-just-above-the-limit")
    assert first.status == "failed" and first.error is not None, first.error
    assert "bulk file(s) failed; the next run resumes them" in first.error, first.error
    assert ": bulk_file_deadline_exceeded: bulk file http" in first.error, first.error
    assert f"within its {DEADLINE_S:g} s deadline (EHRSYNC_BULK_FILE_DEADLINE_S)" in first.error, first.error
    assert "transfer_too_slow" not in first.error and "bulk_file_too_slow" not in first.error
    assert took < 60, took  # each file ends at its deadline (4 at a time), not when it would (up to 3 minutes)
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", GROUP), "*") is None
    with world.env.db.session() as session:
        (job,) = session.scalars(select(BulkJob).where(BulkJob.connection_id == conn)).all()
    failed = {f.url for f in _files(world, job.id) if f.state != "done"}
    assert failed, "the trickled files stay pending for the next run"
    assert all("EHRSYNC_BULK_FILE_DEADLINE_S" in (f.error or "") for f in _files(world, job.id) if f.url in failed)

    world.env.bulk_file_deadline_s = 600.0  # a healthy server: nothing near any deadline
    request_log.clear()
    second = run_bulk_export(world.env, conn, "healthy-again")
    assert second.status == "completed", second.error
    assert second.resumed and second.job_id == job.id
    assert not request_log.paths(f"/fhir/Group/{GROUP}/$export"), "the job is resumed, not exported again"
    fetched = {str(u) for u in request_log.paths("/bulk/files")}
    assert {u.split("?")[0] for u in fetched} == {u.split("?")[0] for u in failed}, "only the missing files"
    files = _files(world, job.id)
    assert all(f.state == "done" for f in files)
    expected: Counter[str] = Counter()
    for f in files:
        if f.kind == "output":
            assert f.expected_count is not None and f.rows == f.expected_count, (f.url, f.rows, f.expected_count)
            expected[f.resource_type] += f.rows
    assert _warehouse_rows(world) == expected


# The deadline bounds the whole file: no wait between its attempts ends past it (a Retry-After, the backoff before the
# engine fetches a short file again), and no read of its body waits past it. Before, the file slept such a wait out
# and only then saw its deadline had passed, a read waited its whole read timeout, and the waits between the engine's
# fetches were not counted at all.


def _timed_export(world: SyncWorld, sb: SandboxServer, conn: str, run_id: str) -> tuple[BulkReport, float]:
    """Run the export with the faults armed, then clear them whatever happens; the report and its seconds."""
    started = time.monotonic()
    try:
        report = run_bulk_export(world.env, conn, run_id)
    finally:
        sb.admin.clear_faults()
    return report, time.monotonic() - started


def _failed_by_deadline(world: SyncWorld, conn: str, report: BulkReport) -> str:
    """The run failed on its files' deadlines and kept everything for the next run: the job, its files pending, the
    cursor unmoved. Returns the run's error."""
    assert report.status == "failed" and report.error is not None, report.error
    assert "bulk file(s) failed; the next run resumes them" in report.error, report.error
    assert ": bulk_file_deadline_exceeded: bulk file http" in report.error, report.error
    assert cursors.get_mark(world.env.db, conn, cursors.bulk_stream("group", GROUP), "*") is None
    with world.env.db.session() as session:
        (job,) = session.scalars(select(BulkJob).where(BulkJob.connection_id == conn)).all()
    assert any(f.state != "done" for f in _files(world, job.id))
    return report.error


def test_a_retry_after_longer_than_a_files_time_left_fails_it_without_waiting(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """Every file answered 503 with Retry-After 120 s against a 3 s deadline: before, each file slept the 120 s and
    only then failed (four at a time: minutes); now each fails before the wait, saying what the server asked and
    what was left, after its one attempt."""
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    world.env.bulk_file_deadline_s = 3.0
    add_fault(http, shared_sb, "503", path="/bulk/files", times=None, retry_after="120")
    report, took = _timed_export(world, shared_sb, conn, "asked-to-wait")
    error = _failed_by_deadline(world, conn, report)
    assert "within its 3 s deadline (EHRSYNC_BULK_FILE_DEADLINE_S): 1 attempt made in " in error, error
    assert "the server asked to wait 120 s and only " in error and " s were left of its transfer deadline" in error
    assert took < 60, took  # the Retry-After alone is 120 s
    fetched = Counter(u.path for u in request_log.paths("/bulk/files"))
    assert fetched and set(fetched.values()) == {1}, fetched


def test_a_files_stalled_body_ends_at_its_deadline_not_at_its_read_timeout(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client
) -> None:
    """Every file sends its headers and 64 bytes, then nothing for a minute, against a 3 s deadline and the client's
    30 s read timeout: each body read waits only what is left of the deadline. Before, each read waited its 30 s
    (four files at a time), then the retry found the deadline passed."""
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    world.env.bulk_file_deadline_s = 3.0
    add_fault(http, shared_sb, "trickle", path="/bulk/files", times=None, chunk_bytes=64, delay_s=60)
    report, took = _timed_export(world, shared_sb, conn, "stalled")
    error = _failed_by_deadline(world, conn, report)
    assert "within its 3 s deadline (EHRSYNC_BULK_FILE_DEADLINE_S): 1 attempt made in " in error, error
    assert took < 45, took  # each read timeout alone is 30 s, four files at a time


def test_the_waits_between_fetches_of_a_short_file_count_against_its_deadline(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """A file one resource short of its manifest's count is fetched again after a backoff (2.5 s, then 5 s here)
    against a 4 s deadline: the waits count, and the one that would end past the deadline is not begun, so the file
    fails after 2 attempts (1 on a machine slow enough to leave under 2.5 s after the first), the error saying
    exactly how many. Before, only the downloads counted (well under a second), so all 3 fetches were made and the
    run was partial."""
    conn = connect_backend(world, shared_sb, http=http, group_id=GROUP)
    world.env.bulk_file_deadline_s = 4.0
    world.env.retry = RetryPolicy(retry_after_min_s=0.05, backoff_start_s=2.5, backoff_cap_s=10.0, jitter=0.0)
    add_fault(http, shared_sb, "bulk_wrong_count", path="/bulk/files/", times=1)
    report = run_bulk_export(world.env, conn, "short-and-waiting")
    error = _failed_by_deadline(world, conn, report)
    fetched = Counter(u.path for u in request_log.paths("/bulk/files"))
    (short, made), *_ = fetched.most_common()
    assert made in (1, 2) and sorted(fetched.values())[:-1] == [1] * (len(fetched) - 1), fetched
    assert f"within its 4 s deadline (EHRSYNC_BULK_FILE_DEADLINE_S): {made} attempt{'s' if made > 1 else ''} made" in (
        error
    ), error
    assert f"the next attempt was due after a wait of {2.5 * 2 ** (made - 1):g} s and only " in error, error
    assert short in error, error
