"""An export slot (Oracle Health: one Bulk export per client and tenant, vendors.md §3; BDX-07) is claimed atomically
across processes for a kick-off, and an export nobody polls holds it only while the EHR still runs it.

Before, ``require_free_slot`` read the slot's polling jobs and the kick-off followed in another transaction: two
runs of two connections of one slot both found it free and both kicked off (the second answered 429 by the EHR).
And a job left ``polling`` by a crashed run refused every other connection of the slot for up to a day, though
the EHR had finished that export long before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from connectors.bulk import BulkClient
from engine import bulk_state, cursors, run_bulk_export, runs
from engine.bulk_jobs import kickoff
from engine.bulk_members import ExportSpec
from engine.bulk_state import JobView, find_job
from engine.connection_info import load_connection
from engine.export_slot_tags import export_slot
from engine.models import ExportSlotClaim, SyncRun, utcnow
from store.models import Connection
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, _add_connection, connect_backend


def _pair(world: SyncWorld, sb: Any, http: httpx.Client) -> tuple[str, str]:
    """Two Oracle Health group connections of one client at one FHIR base: one export slot."""
    first = connect_backend(world, sb, http=http, group_id="grp0", provider_id="cerner")
    skip = {"id", "tenant_id", "issuer", "created_at", "updated_at"}
    with world.env.db.session() as session:
        row = session.get(Connection, first)
        assert row is not None
        columns = {c.name: getattr(row, c.name) for c in Connection.__table__.columns if c.name not in skip}
    return first, _add_connection(world, **{**columns, "group_id": "grp1"})


def _kickoffs(log: RequestLog) -> list[httpx.URL]:
    return [u for u in log.paths("/fhir/Group/") if u.path.endswith("/$export")]


def _dead_pid() -> int:
    """The pid of a process that has ended (a crashed run's)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_bdx07_two_runs_of_one_slot_kicking_off_at_once_send_one_kick_off(
    start_sandbox: Any, slot_world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """The kick-off is held at the sandbox (a ``slow`` fault) while the other run tries: before, both found the
    slot free and both kick-offs reached the EHR; now the second finds the first's claim and sends nothing. On
    SQLite and PostgreSQL alike."""
    world = slot_world
    sb = start_sandbox()
    first, second = _pair(world, sb, http)
    sb.admin.set_fault("slow", path="/fhir/Group/", method="GET", times=None, delay_s=60)
    reports: dict[str, Any] = {}
    start = threading.Barrier(2)

    def run(connection_id: str) -> None:
        start.wait()
        reports[connection_id] = run_bulk_export(world.env, connection_id, f"run-{connection_id}")

    threads = [threading.Thread(target=run, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(_kickoffs(request_log)) < 2 and not reports and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a second kick-off on its way has time to be sent
    finally:
        sb.admin.clear_faults()  # the held kick-off goes on
        for thread in threads:
            thread.join(timeout=120)
    assert len(_kickoffs(request_log)) == 1, _kickoffs(request_log)
    outcomes = sorted((r.status, r.error or "") for r in reports.values())
    assert [s for s, _ in outcomes] == ["completed", "failed"], outcomes
    assert outcomes[1][1].startswith("bulk_export_busy: no export was started: connection "), outcomes
    assert "a kick-off (run run-" in outcomes[1][1]
    with world.env.db.session() as session:  # the winner gave its claim back once its job was saved
        assert session.scalars(select(ExportSlotClaim)).all() == []


def _crashed_export(world: SyncWorld, connection_id: str) -> JobView:
    """A run of the connection kicked off and saved its job, then its process died while polling."""
    conn = load_connection(world.env.db, connection_id)
    runs.ensure_run(world.env.db, connection_id, "crashed", "bulk", tenant_id=conn.tenant_id)
    client = world.env.bulk_client(conn)
    try:
        spec = ExportSpec(cursors.bulk_stream("group", "grp0"), cursors.bulk_type_key([]), [])
        job = kickoff(world.env, conn, client, "crashed", "group", "grp0", spec, None)
    finally:
        client.close()
    with world.env.db.session() as session:
        row = session.get(SyncRun, "crashed")
        assert row is not None and row.status == "running"
        row.owner_pid = _dead_pid()
        session.commit()
    return job


def _wait_done(world: SyncWorld, connection_id: str, job: JobView) -> None:
    """Until the EHR has finished the export (asked with a client of the test's own)."""
    client = world.env.bulk_client(load_connection(world.env.db, connection_id))
    try:
        deadline = time.monotonic() + 120
        while not client.poll(job.status_url).done:
            assert time.monotonic() < deadline, "the sandbox's export never finished"
            time.sleep(0.2)
    finally:
        client.close()


@pytest.mark.parametrize("ehr_side", ["finished", "gone"])
def test_bdx07_an_export_its_crashed_run_left_polling_holds_the_slot_only_while_the_ehr_runs_it(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog, ehr_side: str
) -> None:
    """While the EHR still runs it, the crashed run's export holds the slot (asked once: 202). Once the EHR finished
    it, the next kick-off of the slot records its manifest for its connection (whose next run downloads the files:
    nothing is lost or fetched again) and goes ahead; once gone on the EHR (404), the job is abandoned and its
    connection's next run exports again. Before, the slot stayed held until the job's 24 h deadline."""
    sb = start_sandbox(bulk_throttle_s=6.0)  # 2 patients: the export runs ~12 s on the EHR
    first, second = _pair(world, sb, http)
    job = _crashed_export(world, first)
    held = run_bulk_export(world.env, second, "while-running")
    assert held.error is not None and held.error.startswith(
        f"bulk_export_busy: no export was started: connection {first}"
    )
    assert find_job(world.env.db, job.id).status == "polling" and len(_kickoffs(request_log)) == 1
    asked = len(request_log.paths(urlsplit(job.status_url).path))  # asked once while it ran (202)
    _wait_done(world, first, job)
    if ehr_side == "gone":
        client = world.env.bulk_client(load_connection(world.env.db, first))
        client.cancel(job.status_url)
        client.close()
    freed = run_bulk_export(world.env, second, "after")
    assert freed.status == "completed", freed.error
    assert asked >= 1, "the export nobody polls was asked about"
    assert find_job(world.env.db, job.id).status == ("downloading" if ehr_side == "finished" else "abandoned")
    request_log.clear()
    resumed = run_bulk_export(world.env, first, "next")  # the crashed run's connection carries on
    assert resumed.status == "completed", resumed.error
    assert resumed.resumed == (ehr_side == "finished")
    assert len(_kickoffs(request_log)) == (0 if ehr_side == "finished" else 1)
    assert sum(t.fetched for t in resumed.types.values()) > 0


def test_bdx07_a_live_claim_refuses_and_a_dead_processs_claim_is_taken_over(
    shared_sb: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """A claim of a live process (a kick-off under way) refuses another before any request; one whose process is
    gone (it crashed mid kick-off) is taken over, so a crash never holds the slot."""
    first, second = _pair(world, shared_sb, http)
    conn = load_connection(world.env.db, first)
    slot = export_slot(conn.provider_id, conn.client_id, conn.fhir_base)
    assert slot is not None
    owner = {"connection_id": first, "run_id": "other", "owner_host": socket.gethostname(), "claimed_at": utcnow()}
    with world.env.db.session() as session:
        session.add(
            ExportSlotClaim(
                slot=slot, token="t" * 32, owner_pid=os.getpid(), expires_at=utcnow() + timedelta(hours=1), **owner
            )
        )
        session.commit()
    busy = run_bulk_export(world.env, second, "refused")
    assert busy.error is not None and "has a kick-off (run other) in progress" in busy.error, busy.error
    assert not _kickoffs(request_log)
    with world.env.db.session() as session:
        claim = session.get(ExportSlotClaim, slot)
        assert claim is not None
        claim.owner_pid = _dead_pid()
        session.commit()
    taken = run_bulk_export(world.env, second, "taken-over")
    assert taken.status == "completed", taken.error
    assert len(_kickoffs(request_log)) == 1


@pytest.mark.parametrize("ehr_side", ["finished", "gone"])
def test_bdx07_an_answer_about_an_export_its_own_run_recorded_meanwhile_changes_nothing(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, monkeypatch: pytest.MonkeyPatch, ehr_side: str
) -> None:
    """The probe asks about a job nobody seemed to poll; while it asks, the job's own run (on another host, which
    the probe cannot see) finishes it. The probe's answer must not move the completed job back to ``downloading``
    (its files would be fetched and merged again, and a finished job reopened), nor to ``abandoned``; and the
    answer found moot must not fail the probing run (before, a 404 found moot escaped the probe: the run failed)."""
    sb = start_sandbox(bulk_throttle_s=1.0)
    first, second = _pair(world, sb, http)
    job = _crashed_export(world, first)
    _wait_done(world, first, job)
    if ehr_side == "gone":
        client = world.env.bulk_client(load_connection(world.env.db, first))
        client.cancel(job.status_url)
        client.close()
    real_check = BulkClient.check

    def finished_elsewhere(self: BulkClient, url: str, **kwargs: Any) -> Any:
        if url == job.status_url:
            bulk_state.set_job_status(world.env.db, job.id, "completed")  # the owner's run, meanwhile
        return real_check(self, url, **kwargs)

    monkeypatch.setattr(BulkClient, "check", finished_elsewhere)
    after = run_bulk_export(world.env, second, "after")
    assert after.status == "completed", after.error
    assert find_job(world.env.db, job.id).status == "completed"
