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

from connectors.transport import LowSpeedLimit
from engine import cursors, run_bulk_export
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
    started = time.monotonic()
    try:
        first = run_bulk_export(world.env, conn, "kept-just-above-the-limit")
    finally:
        shared_sb.admin.clear_faults()
    took = time.monotonic() - started
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
