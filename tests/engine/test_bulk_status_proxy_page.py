"""A Bulk status URL answering 200 with a body that is not a JSON object (BDX-09): a gateway's own HTML page served
200, or a body a proxy cut short. That is no manifest at all, far likelier a hiccup in front of the EHR than the
server's answer, so the job is polled again: it is neither failed nor cancelled (``DELETE``), and a streak longer than
the retry policy fails the run by name with the job kept for the next run. A JSON object that is not a valid manifest
stays an invalid manifest (``tests/connectors/test_bulk_unit.py::test_bdx12_invalid_manifest_in_wait_cancels_job``).

Before, such a 200 was an invalid manifest: the job was failed, its status URL deleted, and the whole export began
again at the next run."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine import bulk_state, cursors, run_bulk_export
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_backend

GROUP = "grp0"
KICK_OFF = f"/fhir/Group/{GROUP}/$export"
STREAM = cursors.bulk_stream("group", GROUP)


def test_bdx09_a_gateway_page_served_200_while_polling_is_polled_again_not_cancelled(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox()
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "proxy_page", path="/bulk/status/", method="GET", times=2)
    request_log.clear()
    report = run_bulk_export(world.env, conn, "through-gateway")
    assert report.status == "completed", report.error
    assert len(request_log.paths(KICK_OFF)) == 1, "no second kick-off"
    assert len(request_log.paths("/bulk/status/")) >= 3, "two gateway pages, then the manifest"
    assert len(request_log.paths("/bulk/status/", method="DELETE")) == 1, "DELETEd once, after landing (BDX-11)"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None


@pytest.mark.parametrize("kind", ["proxy_page", "body_cut"])
def test_bdx09_a_200_that_keeps_being_no_json_object_fails_the_run_by_name_and_the_next_run_resumes_the_job(
    kind: str, start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox()
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, kind, path="/bulk/status/", method="GET", times=None)
    request_log.clear()
    first = run_bulk_export(world.env, conn, "gateway-down")
    assert first.status == "failed" and first.error is not None
    assert first.error.startswith("bulk_status_unavailable: bulk status kept failing transiently"), first.error
    assert "answered 200 with a body that is not a JSON object" in first.error
    assert not request_log.paths("/bulk/status/", method="DELETE"), "the job is not cancelled"
    job = bulk_state.find_active_job(world.env.db, conn, STREAM, "*")
    assert job is not None and job.status == "polling" and job.id == first.job_id

    http.delete(f"{sb.base_url.rstrip('/')}/admin/faults").raise_for_status()
    again = run_bulk_export(world.env, conn, "gateway-back")
    assert again.status == "completed" and again.resumed and again.job_id == first.job_id, again.error
    assert len(request_log.paths(KICK_OFF)) == 1, "the same export, resumed at its status URL"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None


@pytest.mark.parametrize("paged", [False, True], ids=["one-page", "paged"])
def test_bdx09_a_manifest_starting_with_a_byte_order_mark_served_text_plain_is_read_not_polled_again(
    paged: bool, start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """RFC 8259 lets a parser ignore a BOM, and a .NET writer's defaults put one first (served ``text/plain``): the
    manifest is the server's whole answer, read at the first complete poll. Before, it was 'not a JSON object', polled
    again as a gateway's page until the run failed bulk_status_unavailable, and so at every run until the deadline."""
    sb = start_sandbox(bulk_manifest_bom=True, bulk_manifest_page_size=2 if paged else None, bulk_lines_per_file=5)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    request_log.clear()
    report = run_bulk_export(world.env, conn, "bom-manifest")
    assert report.status == "completed", report.error
    assert len(request_log.paths(KICK_OFF)) == 1, "no second kick-off"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None
