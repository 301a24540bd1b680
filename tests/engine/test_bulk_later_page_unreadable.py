"""A later page of a paged Bulk manifest (``link`` ``next``, as Epic and other servers page large manifests) that
answers 200 with a body that is not a JSON object: a gateway's own HTML page, or a body a proxy cut short. That is no
manifest page at all, as it is no manifest on the status URL itself (``test_bulk_status_proxy_page``), so the page is
asked again within the same bounds (the retry policy's attempts), never taken as an invalid manifest: the job is
neither failed nor cancelled (``DELETE``), and once the bounds run out the run fails by name with the job kept. Nothing
of the earlier pages was saved meanwhile: the pages are gathered whole before the manifest is recorded, so the next
run reads every page again at the same status URL and lands every file, the earlier pages' included.

Before, such a page made the manifest invalid: the job was failed and its status URL deleted, and the next run
exported everything again from the old ``_since``."""

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


def _later_pages(request_log: RequestLog) -> list[httpx.URL]:
    return [u for u in request_log.paths("/bulk/status/") if "/page/" in u.path]


@pytest.mark.parametrize("kind", ["proxy_page", "body_cut"])
def test_bdx09_a_later_page_answering_no_json_object_is_asked_again_and_the_export_completes(
    kind: str, start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox(bulk_manifest_page_size=2, bulk_lines_per_file=5)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, kind, path="/bulk/status/", path_contains="/page/", method="GET", times=2)
    request_log.clear()
    report = run_bulk_export(world.env, conn, "later-page-hiccup")
    assert report.status == "completed", report.error
    assert len(request_log.paths(KICK_OFF)) == 1, "no second kick-off"
    assert len(request_log.paths("/bulk/status/", method="DELETE")) == 1, "DELETEd once, after landing (BDX-11)"
    assert report.files == len(request_log.paths("/bulk/files")) and report.files >= 4, "every page's files"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None


@pytest.mark.parametrize("kind", ["proxy_page", "body_cut"])
def test_bdx09_a_later_page_that_keeps_answering_no_json_object_fails_the_run_by_name_and_the_next_run_resumes(
    kind: str, start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox(bulk_manifest_page_size=2, bulk_lines_per_file=5)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, kind, path="/bulk/status/", path_contains="/page/", method="GET", times=None)
    request_log.clear()
    first = run_bulk_export(world.env, conn, "later-page-down")
    assert first.status == "failed" and first.error is not None
    assert first.error.startswith("bulk_status_unavailable: bulk manifest page "), first.error
    assert "answered 200 with a body that is not a JSON object" in first.error
    assert not request_log.paths("/bulk/status/", method="DELETE"), "the job is not cancelled"
    assert len({u.path for u in _later_pages(request_log)}) == 1, "the same page asked again, none beyond it"
    assert world.env.retry is not None
    assert len(_later_pages(request_log)) == world.env.retry.max_attempts, "within the retry policy's attempts"
    job = bulk_state.find_active_job(world.env.db, conn, STREAM, "*")
    assert job is not None and job.status == "polling" and job.id == first.job_id
    assert bulk_state.all_files(world.env.db, job.id) == [], "nothing of the earlier pages is saved half-gathered"
    assert not request_log.paths("/bulk/files"), "no file of an earlier page is fetched"

    http.delete(f"{sb.base_url.rstrip('/')}/admin/faults").raise_for_status()
    request_log.clear()
    again = run_bulk_export(world.env, conn, "later-page-back")
    assert again.status == "completed" and again.resumed and again.job_id == first.job_id, again.error
    assert not request_log.paths(KICK_OFF), "the same export, resumed at its status URL"
    assert again.files == len(request_log.paths("/bulk/files")) and again.files >= 4, "the first page's files too"
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None
