"""The sync API's bulk half (issue 5) against real components (``stack``, one per module:
tests/auth_service/sync_stack.py): bulk start and status on backend and group connections.

Conformance: BDX-08 (bulk jobs reported from ``bulk_jobs``), BDX-15 (a group's membership jobs).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from engine.models import BulkJob, BulkJobFile, utcnow
from tests.auth_service.sync_stack import (
    BULK_START,
    BULK_STATUS,
    SYNC,
    Stack,
    add_connection,
    backend_connection,
    bulk_job,
    poll,
    sync,
    sync_run,
)


def test_bulk_start_refuses_patient_connections_and_flag_off(stack: Stack, patient_connection: str) -> None:
    r = stack.api("POST", BULK_START, json={"connectionId": patient_connection})
    assert r.status_code == 409 and r.json()["error"] == "bulk_not_enabled"
    other_group = add_connection(stack, "t2", kind="group")
    r = stack.api("POST", BULK_START, key=stack.other_key, json={"connectionId": other_group})
    assert r.status_code == 409 and r.json()["error"] == "bulk_not_enabled"
    assert "enableBulkExport" in r.json()["message"]
    r = stack.api("POST", SYNC, key=stack.other_key, json={"connectionId": other_group})
    assert r.status_code == 409 and r.json()["error"] == "bulk_not_enabled", "the sync endpoint must check it too"


def test_bulk_run_that_fails_is_reported_failed_bdx08(stack: Stack) -> None:
    """A group connection with no tokens: the bulk_export run fails in Dagster and the API reports it."""
    group = add_connection(stack, "t1", kind="group")
    r = stack.api("POST", BULK_START, json={"connectionId": group})
    assert r.status_code == 202, r.text
    assert r.json()["job"] == "bulk_export" and r.json()["kind"] == "bulk"
    final = poll(stack, BULK_STATUS, r.json()["syncId"], lambda b: b["status"] in ("completed", "failed"))
    assert final["status"] == "failed", final
    assert final["error"]


def test_bulk_status_reports_job_files(stack: Stack) -> None:
    """The bulk job row of a run: status URL presence, transactionTime, files done/total (BDX-08)."""
    group = add_connection(stack, "t1", kind="group")
    run_id = uuid.uuid4().hex
    with stack.service.ctx.db.session() as session, session.begin():
        session.add(sync_run(run_id, group, kind="bulk", status="completed", size=10))
        session.add(
            BulkJob(
                id="job-" + run_id[:8],
                connection_id=group,
                run_id=run_id,
                stream="bulk:group:g1",
                type_key="Patient",
                level="group",
                group_id="g1",
                types=["Patient"],
                kickoff_url="https://ehr.example/fhir/Group/g1/$export",
                status_url="https://ehr.example/bulk/status/1",
                status="completed",
                transaction_time=utcnow(),
            )
        )
        session.flush()
        for n, state in enumerate(("done", "done", "failed")):
            session.add(
                BulkJobFile(
                    job_id="job-" + run_id[:8],
                    kind="output",
                    resource_type="Patient",
                    url=f"https://ehr.example/f{n}.ndjson",
                    state=state,
                )
            )
    body = stack.api("GET", BULK_STATUS, params={"syncId": run_id}).json()
    assert body["status"] == "completed" and body["dagsterStatus"] is None
    bulk = body["bulk"]
    assert bulk["statusUrlPresent"] is True and bulk["transactionTime"]
    assert (bulk["filesDone"], bulk["filesFailed"], bulk["filesTotal"]) == (2, 1, 3)
    assert stack.api("GET", BULK_STATUS, key=stack.other_key, params={"syncId": run_id}).status_code == 404


def test_bulk_export_end_to_end_bdx08(stack: Stack, sandbox_session: Any) -> None:
    """Bulk start on a backend connection (tenant flag on) runs ``bulk_export``; status shows the bulk job."""
    conn_id = backend_connection(stack, sandbox_session)
    r = stack.api("POST", BULK_START, json={"connectionId": conn_id})
    assert r.status_code == 202, r.text
    assert r.json()["job"] == "bulk_export"
    final = poll(stack, BULK_STATUS, r.json()["syncId"], lambda b: b["status"] in ("completed", "failed"))
    assert final["status"] == "completed", final
    bulk = final["bulk"]
    assert bulk is not None and bulk["status"] == "completed", bulk
    assert bulk["statusUrlPresent"] is True and bulk["transactionTime"]
    assert bulk["filesTotal"] > 0 and bulk["filesDone"] == bulk["filesTotal"], bulk
    assert final["counts"] and final["bytes"] > 0


def test_bulk_status_describes_the_export_not_the_membership_jobs_bdx15(stack: Stack, sandbox_session: Any) -> None:
    """Issue 10: a group's second export also runs the BDX-15 membership jobs (member ids, maybe new members);
    bulk status must describe the export itself. Before, it showed the newest job of the run: a membership one.
    """
    conn_id = backend_connection(stack, sandbox_session, group_id="grp0")
    first = sync(stack, conn_id, "full", BULK_START)
    assert first["status"] == "completed", first
    second = sync(stack, conn_id, "full", BULK_START)
    assert second["status"] == "completed", second
    with stack.service.ctx.db.session() as session:
        jobs = session.query(BulkJob).filter_by(run_id=second["syncId"]).all()
        streams = {j.stream: j.id for j in jobs}
    assert any(stream.endswith(":members") for stream in streams), f"no membership check ran: {streams}"
    assert second["bulk"]["jobId"] == streams["bulk:group:grp0"], (second["bulk"], streams)
    assert second["bulk"]["level"] == "group" and second["bulk"]["status"] == "completed"
    assert second["bulk"]["jobId"] == second["counts"]["_bulk"]["job_id"]


@pytest.mark.parametrize("closed", [True, False], ids=["completed-run", "running-run"])
def test_bulk_status_follows_a_resumed_export(stack: Stack, closed: bool) -> None:
    """A resumed export's job keeps the id of the run that kicked it off: the run that resumed it still reports
    it, whether closed (its summary names the job) or still running (the connection's export in progress).
    Before, only jobs carrying the run's own id were looked at: none here, or the newer membership job."""
    group = add_connection(stack, "t1", kind="group")
    run_id, earlier, job_id = uuid.uuid4().hex, uuid.uuid4().hex, "job-" + uuid.uuid4().hex[:12]
    with stack.service.ctx.db.session() as session, session.begin():
        session.add(
            sync_run(
                run_id,
                group,
                kind="bulk",
                status="completed" if closed else "running",
                counts={"_bulk": {"job_id": job_id}} if closed else None,
                created_at=utcnow() - timedelta(minutes=5),
                started_at=utcnow() - timedelta(minutes=5),
                finished_at=utcnow() if closed else None,
            )
        )
        bulk_job(session, job_id, group, earlier, "bulk:group:g1", "completed" if closed else "downloading")
        if closed:
            bulk_job(session, "ids-" + job_id, group, run_id, "bulk:group:g1:members", "completed")
    body = stack.api("GET", BULK_STATUS, params={"syncId": run_id}).json()
    assert body["bulk"] is not None and body["bulk"]["jobId"] == job_id, body
