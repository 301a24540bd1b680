"""Empty searchset pages behind ``next`` links, over a real socket through the engine (BDX-29).

A server may send a page with no match and a ``next`` link now and then: a few are followed and the sync ends
whole. One whose cursor changes on every empty page (the sandbox's ``search_empty_page`` armed for good) repeats no
link, so only a bound on empty pages in a row ends it: the search fails as incomplete, typed, with what arrived
stored and the stored mark untouched, after a bounded number of requests: the search, its larger-page retry and
one narrower window stalling so show an endless cursor, and no other window is tried (``search_endless_paging``).
The retry alone proves nothing: a server capping ``_count`` sends it the same pages.
"""

from __future__ import annotations

from collections.abc import Callable
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
from tests.engine.job_runs import SyncRun, run_sync, sync_type

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


def _sync_under_empty_pages(
    world: SyncWorld, conn: str, sb: SandboxServer, http: httpx.Client, log: RequestLog, times: int | None
) -> SyncRun:
    """Observation synced while its searches answer empty pages, each with a fresh next link (``times`` pages;
    None: for good); the request log holds that run's requests alone."""
    add_fault(http, sb, "search_empty_page", path=OBS, times=times)
    log.clear()
    try:
        return run_sync(world, conn, types=["Observation"])
    finally:
        sb.admin.clear_faults()


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
    """The bound lowered to 5 here. The search, its larger-page retry and the first narrower window all stall: an
    endless cursor, so the type fails at once (``search_endless_paging``), without the other narrower windows that
    each walked the same empty pages (``(2 + 64) * (bound + 1)`` requests before)."""
    bound = 5
    monkeypatch.setattr(search, "MAX_EMPTY_PAGES", bound)
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, shared_sb, http=http)
    first = run_sync(world, conn, types=["Observation"])
    stored = _mark(world, conn)
    assert first.status == "completed" and stored is not None
    landed = _observations(world)
    shared_sb.admin.mutate(update=3, seed=7)  # changes the next search would have to bring
    report = _sync_under_empty_pages(world, conn, shared_sb, http, request_log, ENDLESS)
    obs = report.types["Observation"]
    assert report.status == "failed", report.error
    assert "search_endless_paging" in report.failed_types["Observation"], report.failed_types
    assert "endless cursor" in report.failed_types["Observation"]
    assert obs.incomplete and obs.high_water_mark is None
    assert any("paging stalls" in w for w in obs.warnings), obs.warnings
    assert _mark(world, conn) == stored  # the cursor did not move past the changes that never arrived
    assert _observations(world) == landed
    requested = len(request_log.paths(OBS))
    assert 0 < requested <= 3 * (bound + 1), requested  # the search, its larger-page retry, one window


def test_bdx29_an_endless_cursor_at_the_real_bound_costs_three_searches_not_sixty_six(
    tmp_path: Path, shared_sb: SandboxServer, http: httpx.Client, request_log: RequestLog
) -> None:
    """``MAX_EMPTY_PAGES`` as shipped, the fault armed for good: before, the search, its retry and 64 windows each
    walked ``MAX_EMPTY_PAGES + 1`` pages (~6,600 requests) before the type failed."""
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, types=["Observation"]).status == "completed"
    stored = _mark(world, conn)
    report = _sync_under_empty_pages(world, conn, shared_sb, http, request_log, None)
    requested = len(request_log.paths(OBS))
    assert requested <= 3 * (MAX_EMPTY_PAGES + 1) < (2 + MAX_WINDOW_SEARCHES) * (MAX_EMPTY_PAGES + 1), requested
    assert report.status == "failed" and "search_endless_paging" in report.failed_types["Observation"]
    assert _mark(world, conn) == stored


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


def test_bdx29_a_stall_again_at_a_server_capped_page_size_still_tries_a_narrower_window(
    tmp_path: Path,
    start_sandbox: Callable[..., SandboxServer],
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server may send fewer matches than ``_count`` asks (FHIR R4 search: it "is not bound to return the number
    requested"; the AI Application Suite caps it, vendors.md §3): the larger-page retry gets the same pages, so a
    server filtering its pages after paging them stalls again on the same rows. That is no proof of an endless
    cursor: a narrower ``_lastUpdated`` window holds fewer filtered rows, and here it completes. Before, the second
    stall failed the type with ``search_endless_paging`` and the changes were never received."""
    bound = 5
    monkeypatch.setattr(search, "MAX_EMPTY_PAGES", bound)
    sb = start_sandbox(patients=1, max_count=5)  # the page size asked for: a retry's larger _count gets 5 too
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, sb, http=http)
    assert run_sync(world, conn, types=["Observation"]).status == "completed"
    stored = _mark(world, conn)
    sb.admin.mutate(update=3, seed=7)
    clean = _world(tmp_path, "clean", http)
    # the search and its retry each walk bound + 1 empty pages; the first window finds the data
    report = _sync_under_empty_pages(world, conn, sb, http, request_log, 2 * (bound + 1))
    obs = report.types["Observation"]
    assert report.status == "completed", report.failed_types
    assert not obs.incomplete and any("narrower _lastUpdated windows" in w for w in obs.warnings), obs.warnings
    assert stored is not None and (_mark(world, conn) or stored) > stored
    assert sync_type(clean, connect_patient(clean, sb, http=http), "Observation").error is None
    assert _observations(world) == _observations(clean)
