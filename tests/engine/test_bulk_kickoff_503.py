"""A Bulk kick-off answered 503 without ``Retry-After`` is not sent again in the same call (BDX-06/07): a gateway
answers so after giving up on an EHR that may have gone on to start the job (the sandbox's ``processed`` fault does
exactly that), and a second kick-off would start a second export ehrsync cannot see or cancel. The run fails by
name, records no job and leaves ``_since``; the engine's retry path (``engine.retries``) runs it again after its
backoff (5 min by default), which kicks off afresh. A 429 or 503 *with* ``Retry-After`` is the server saying it did
not act, and is waited out in the call (BDX-07; ``tests/connectors/test_bulk_unit.py``)."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from engine import cursors, run_bulk_export
from engine.models import BulkJob
from engine.retries import failure_streaks
from engine.scheduling import DueReason, RetryBackoff, decide_retry
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend

GROUP = "grp0"
STREAM = cursors.bulk_stream("group", GROUP)


def _jobs(world: SyncWorld, connection_id: str) -> list[BulkJob]:
    with world.env.db.session() as session:
        return list(session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)).all())


def test_bdx06_a_kick_off_answered_503_without_retry_after_is_sent_once_and_retried_by_the_engine(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox()
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    kick_off = f"/fhir/Group/{GROUP}/$export"
    add_fault(http, sb, "503", path=kick_off, retry_after="", processed=True, times=1)
    request_log.clear()
    first = run_bulk_export(world.env, conn, "gateway-503")
    assert first.status == "failed" and first.error is not None
    assert first.error.startswith("bulk_export_error: bulk kick-off failed: ") and "HTTP 503" in first.error
    assert len(request_log.paths(kick_off)) == 1, "a kick-off the EHR may have acted on is not sent again"
    assert not _jobs(world, conn) and cursors.get_mark(world.env.db, conn, STREAM, "*") is None

    streak = failure_streaks(world.env.db)[conn]  # what the scheduling sensor reads each tick
    assert streak.failures == 1
    backoff = RetryBackoff(base=timedelta(minutes=5), cap=timedelta(hours=6))
    failed_at = streak.last_failed_at if streak.last_failed_at.tzinfo else streak.last_failed_at.replace(tzinfo=UTC)
    soon = decide_retry(failed_at + timedelta(minutes=1), streak=streak, backoff=backoff, window=None)
    due = decide_retry(failed_at + timedelta(minutes=5), streak=streak, backoff=backoff, window=None)
    assert (soon.reason, due.reason) == (DueReason.BACKING_OFF, DueReason.RETRY)

    again = run_bulk_export(world.env, conn, "retry")  # the retry the sensor starts
    assert again.status == "completed" and not again.resumed, again.error
    assert len(request_log.paths(kick_off)) == 2 and len(_jobs(world, conn)) == 1
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None
