"""Empty searchset pages behind ``next`` links, over a real socket through the engine (BDX-29).

A server may send a page with no match and a ``next`` link now and then: a few are followed and the sync ends
whole. One whose cursor changes on every empty page (the sandbox's ``search_empty_page`` armed for good) repeats no
link, so only a bound on empty pages in a row ends it: the search fails as incomplete, typed, with what arrived
stored and the stored mark untouched, after a bounded number of requests (the recovery searches included).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.fhir import search
from connectors.fhir.search import MAX_EMPTY_PAGES
from engine import cursors
from engine.search_recovery import MAX_WINDOW_SEARCHES
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, content_fingerprint, make_environment
from tests.engine.job_runs import run_sync, sync_type

OBS = "/fhir/Observation"
#: Far more empty pages than any bounded client asks for: the code before the bound followed them all, then
#: received the data and moved the mark as if the search had been whole at once (never looping forever here).
ENDLESS = 2000


def _world(tmp_path: Path, name: str, http: httpx.Client) -> SyncWorld:
    return make_environment(tmp_path / name, http=http, page_size=5)


def _observations(world: SyncWorld) -> list[tuple[Any, ...]]:
    return [
        row for row in content_fingerprint(world.env.warehouse_target, with_connection=False) if row[0] == "Observation"
    ]


def _mark(world: SyncWorld, conn: str) -> datetime | None:
    return cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation")


def test_bdx29_a_few_empty_pages_with_next_links_are_followed_and_the_sync_ends_whole(
    tmp_path: Path, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    clean_world = _world(tmp_path, "clean", http)
    assert sync_type(clean_world, connect_patient(clean_world, shared_sb, http=http), "Observation").error is None
    world = _world(tmp_path, "quirky", http)
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "search_empty_page", path=OBS, times=MAX_EMPTY_PAGES)
    report = sync_type(world, conn, "Observation")
    assert report.error is None and not report.incomplete and not report.warnings, report.warnings
    assert _observations(world) == _observations(clean_world)
    assert _mark(world, conn) == report.high_water_mark is not None


def test_bdx29_endless_empty_pages_with_changing_links_fail_the_type_and_keep_the_mark(
    tmp_path: Path,
    shared_sb: SandboxServer,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound lowered to 5 here, so the recovery's many searches stay a few hundred requests."""
    bound = 5
    monkeypatch.setattr(search, "MAX_EMPTY_PAGES", bound)
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, shared_sb, http=http)
    first = run_sync(world, conn, types=["Observation"])
    stored = _mark(world, conn)
    assert first.status == "completed" and stored is not None
    landed = _observations(world)
    shared_sb.admin.mutate(update=3, seed=7)  # changes the next search would have to bring
    add_fault(http, shared_sb, "search_empty_page", path=OBS, times=ENDLESS)
    request_log.clear()
    try:
        report = run_sync(world, conn, types=["Observation"])
    finally:
        shared_sb.admin.clear_faults()
    obs = report.types["Observation"]
    assert report.status == "failed" and "search_incomplete" in report.failed_types["Observation"], report.error
    assert obs.incomplete and obs.high_water_mark is None
    assert any("paging stalls" in w for w in obs.warnings), obs.warnings
    assert _mark(world, conn) == stored  # the cursor did not move past the changes that never arrived
    assert _observations(world) == landed
    searches = 2 + MAX_WINDOW_SEARCHES  # the search, its smaller-page retry, the narrower windows
    requested = len(request_log.paths(OBS))
    assert 0 < requested <= searches * (bound + 1) < ENDLESS, requested


def test_bdx29_a_search_stalled_on_empty_pages_is_asked_again_with_larger_pages(
    tmp_path: Path,
    shared_sb: SandboxServer,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Empty pages come from a server filtering its pages after paging them: smaller pages only lengthen the run of
    empty ones, so the one-page-size retry asks larger pages (the retry halved ``_count``, as for a cut-short
    listing). The fault ends with the first search here, so the retry recovers either way: its ``_count`` is what
    this checks."""
    bound = 3
    monkeypatch.setattr(search, "MAX_EMPTY_PAGES", bound)
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "search_empty_page", path=OBS, times=bound + 1)
    request_log.clear()
    try:
        report = sync_type(world, conn, "Observation")
    finally:
        shared_sb.admin.clear_faults()
    assert report.error is None and not report.incomplete, report.warnings
    assert any("recovered" in w for w in report.warnings), report.warnings
    counts = {int(u.params["_count"]) for u in request_log.paths(OBS) if "_count" in u.params}
    assert 5 in counts and min(counts) >= 5 and max(counts) > 5, counts
