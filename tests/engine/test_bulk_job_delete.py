"""BDX-11 over the sandbox's socket: every Bulk job ehrsync is done with gets a ``DELETE`` on its status URL."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from engine import run_bulk_export
from engine.models import BulkJob
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend


def test_bdx11_a_landed_export_and_one_abandoned_for_an_expired_file_each_get_a_delete(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """BDX-11: a file answered 410 abandons the job (the export is run again from the same ``_since``, BDX-19) and
    the job that lands completes: each is deleted on its own status URL, once, so the server may free its files.
    Before this test no test failed with either ``DELETE`` left out."""
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    add_fault(http, shared_sb, "bulk_410", path="/bulk/files", times=1)
    report = run_bulk_export(world.env, conn, "one-gone")
    assert report.status == "completed", report.error
    with world.env.db.session() as session:
        jobs = sorted(
            session.scalars(select(BulkJob).where(BulkJob.connection_id == conn)).all(), key=lambda j: j.requested_at
        )
        by_status = {j.status: httpx.URL(j.status_url).path for j in jobs}
    assert sorted(by_status) == ["abandoned", "completed"], by_status
    deleted = [u.path for u in request_log.paths("/bulk/status", method="DELETE")]
    assert sorted(deleted) == sorted(by_status.values()), (deleted, by_status)
