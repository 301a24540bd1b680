"""Searchsets that silently miss matches, over a real socket (scripted servers: tests/engine/search_servers.py;
then the sandbox's ``search_offset_shift`` and ``search_error_outcome`` faults).

A server paging by offset over live data repeats one match and skips another, so ``total`` is checked against
distinct ``(resourceType, id)``; a page behind a next link that brings nothing new is a repeat; an error
OperationOutcome entry in a 200 searchset means matches are missing. Each holds the mark (or is recovered in the
run), and the weekly deletion check tombstones nothing on such a listing. A recovery retry whose ``_count`` the
server refuses (400/422) goes on to narrower ``_lastUpdated`` windows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from connectors.errors import SearchIncompleteError
from engine import reconcile_deletes
from sandbox import SandboxServer
from tests.engine.fake_fhir import Reply, serve
from tests.engine.helpers import (
    SyncWorld,
    add_fault,
    connect_patient,
    connect_static,
    content_fingerprint,
    make_environment,
)
from tests.engine.job_runs import run_sync, sync_type
from tests.engine.search_servers import (
    BUNDLE_TIME,
    OffsetServer,
    delete_first,
    fake_server,
    in_bounds,
    mark_of,
    obs,
    operation_outcome,
    searchset,
    set_mark,
    touch_first,
    warehouse_ids,
    windowed,
)

SERVER_MARK = datetime.fromisoformat(BUNDLE_TIME)
SECRET = "Jane Q Patient MRN 12345"  # what a server's diagnostics may echo: never in warnings or logs


def test_page_one_resent_under_a_new_url_is_incomplete_and_holds_the_mark_bdx29(world: SyncWorld) -> None:
    """BDX-29: a server ignoring its paging offset sends page 1 again under the next link's URL, then stops.
    Four entries arrived for ``total`` 4, but only two distinct matches: incomplete, no mark stored."""
    fake = fake_server()
    first_page = [obs(1), obs(2)]

    def observation(_path: str, q: dict[str, list[str]]) -> Reply:
        if q.get("_getpagesoffset"):
            return searchset(first_page, total=4)
        return searchset(first_page, next_url=f"{fake.base_url}/fhir/Observation?_getpagesoffset=2", total=4)

    fake.routes["/fhir/Observation"] = observation
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        report = sync_type(world, conn, "Observation")
    assert report.fetched == 2 and report.incomplete and mark_of(world, conn) is None
    assert report.error is not None and report.error.startswith("search_incomplete")
    assert any("total 4, received 2, no next link" in w for w in report.warnings), report.warnings


def test_offset_shift_while_paging_is_recovered_in_the_same_run_bdx29(world: SyncWorld) -> None:
    """BDX-29: o1 is updated between pages, so page 2 holds o4 and o1 again and o3 is never sent (o1 counted
    twice used to reach ``total`` and move the mark past o3 for good). Three distinct of four: searched again."""
    fake = fake_server()
    server = OffsetServer(fake)
    server.between_pages = touch_first
    fake.routes["/fhir/Observation"] = server.route
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        report = sync_type(world, conn, "Observation")
    assert warehouse_ids(world, conn) == {"o1", "o2", "o3", "o4"}
    assert not report.incomplete and report.error is None
    assert any("total 4, received 3" in w for w in report.warnings), report.warnings
    assert any(w.startswith("recovered") for w in report.warnings), report.warnings
    assert mark_of(world, conn) == SERVER_MARK


def test_a_deletion_while_paging_that_lowers_a_live_total_is_recovered_bdx29(world: SyncWorld) -> None:
    """BDX-29: o1 (already read) is deleted between pages of an offset server reporting a live total: page 2 holds
    o4 alone and o3 is never sent, while the total drops to 3, which the 3 distinct received would meet. The
    largest total the search gave (4) counts: searched again, o3 stored, the mark moved only after."""
    fake = fake_server()
    server = OffsetServer(fake)
    server.between_pages = delete_first
    fake.routes["/fhir/Observation"] = server.route
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        report = sync_type(world, conn, "Observation")
    assert {"o2", "o3", "o4"} <= warehouse_ids(world, conn)
    assert not report.incomplete and report.error is None
    assert any(w.startswith("recovered") for w in report.warnings), report.warnings
    assert mark_of(world, conn) == SERVER_MARK


def test_offset_shift_on_every_paged_search_is_recovered_by_windows_bdx29(world: SyncWorld) -> None:
    """BDX-29: every paged search over the whole range shifts (the retry too); the narrower ``_lastUpdated``
    windows are not disturbed and bring what was skipped, so the mark moves and nothing is lost."""
    fake = fake_server()
    server = OffsetServer(fake, count=8)
    fake.routes["/fhir/Observation"] = server.route
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        set_mark(world, conn, datetime(2026, 9, 1, tzinfo=UTC))
        server.between_pages, server.shifts, server.spare_windows = touch_first, None, True
        report = sync_type(world, conn, "Observation")
    assert warehouse_ids(world, conn) == {f"o{i}" for i in range(1, 9)}
    assert not report.incomplete and report.error is None, report.warnings
    assert any("narrower _lastUpdated windows" in w for w in report.warnings), report.warnings
    assert any(windowed(q) for q in fake.query_of("/fhir/Observation"))
    assert mark_of(world, conn) == SERVER_MARK


def test_offset_shift_in_the_deletion_check_listing_tombstones_nothing_bdx31(world: SyncWorld) -> None:
    """BDX-31: the weekly deletion check lists ids from the same offset-paging server; an update during the
    listing hides o3. The listing raises and nothing is tombstoned (a deletion-check tombstone is only undone by
    a strictly newer lastUpdated, so a live resource tombstoned here would stay deleted)."""
    fake = fake_server()
    server = OffsetServer(fake)
    fake.routes["/fhir/Observation"] = server.route
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        sync_type(world, conn, "Observation", full=True)
        assert warehouse_ids(world, conn) == {"o1", "o2", "o3", "o4"}
        server.between_pages = touch_first
        with pytest.raises(SearchIncompleteError) as raised:
            reconcile_deletes(world.env, conn, "Observation")
    assert raised.value.reason == "no_next" and raised.value.received == 3
    assert warehouse_ids(world, conn) == warehouse_ids(world, conn, live_only=False) == {"o1", "o2", "o3", "o4"}


def _truncated(severity: str = "error") -> dict[str, Any]:
    return operation_outcome(severity, "incomplete", f"Some results could not be returned for {SECRET}\x1b[2J")


@pytest.mark.parametrize("severity", ["error", "warning"])
def test_error_outcome_in_a_searchset_holds_the_mark_without_logging_diagnostics_bdx32(
    world: SyncWorld, caplog: pytest.LogCaptureFixture, severity: str
) -> None:
    """BDX-32: a 200 searchset whose ``search.mode=outcome`` OperationOutcome (``incomplete``, severity error, or
    only warning: FHIR's ``incomplete`` applies to search results at any severity, as in "too many matches") says
    matches are missing, on every search: searched again, not recovered, the mark not stored; the warnings name
    the issue codes, never the server's diagnostics (warnings are logged)."""
    fake = fake_server()
    fake.routes["/fhir/Observation"] = lambda _p, _q: searchset([obs(1)], outcomes=[_truncated(severity)])
    caplog.set_level(logging.DEBUG)
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        report = sync_type(world, conn, "Observation")
    assert report.incomplete and mark_of(world, conn) is None and warehouse_ids(world, conn) == {"o1"}
    assert report.error is not None and report.error.startswith("search_incomplete")
    said = f"saying matches are missing after 1 matches (severity {severity}; issues: incomplete)"
    assert any(said in w for w in report.warnings), report.warnings
    assert SECRET not in " ".join(report.warnings) and SECRET not in caplog.text


def test_error_outcome_once_is_recovered_in_the_same_run_bdx32(world: SyncWorld) -> None:
    """BDX-32: the first answer leaves o2 out and says so; the search again returns everything."""
    fake = fake_server()
    answers = [searchset([obs(1)], outcomes=[_truncated("fatal")])]
    fake.routes["/fhir/Observation"] = lambda _p, _q: answers.pop() if answers else searchset([obs(1), obs(2)])
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        report = sync_type(world, conn, "Observation")
    assert warehouse_ids(world, conn) == {"o1", "o2"} and not report.incomplete and report.error is None
    assert any(w.startswith("recovered") for w in report.warnings) and mark_of(world, conn) == SERVER_MARK


def test_warning_outcomes_are_noted_once_without_diagnostics_and_the_mark_moves_bdx32(world: SyncWorld) -> None:
    """BDX-32: ``warning``/``information`` outcomes that do not say matches are missing lose nothing: the mark
    moves, and each distinct one is a warning of the report (severity and codes; no diagnostics), once however
    many pages repeat it."""
    fake = fake_server()
    notes = [
        operation_outcome("warning", "not-supported", SECRET),
        operation_outcome("information", "incomplete", SECRET),
    ]

    def observation(_path: str, q: dict[str, list[str]]) -> Reply:
        if q.get("page"):
            return searchset([obs(2)], outcomes=notes)
        return searchset([obs(1)], next_url=f"{fake.base_url}/fhir/Observation?page=2", outcomes=notes)

    fake.routes["/fhir/Observation"] = observation
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        report = sync_type(world, conn, "Observation")
    assert not report.incomplete and report.error is None and mark_of(world, conn) == SERVER_MARK
    assert report.warnings == [
        "the server noted on the Observation search: severity warning; issues: not-supported",
        "the server noted on the Observation search: severity information; issues: incomplete",
    ]


@pytest.mark.parametrize("status", [400, 422])
def test_refused_count_retry_goes_on_to_windows_bdx29(world: SyncWorld, status: int) -> None:
    """BDX-29: the server stops early (total 300, two sent, no next) and refuses a ``_count`` over its maximum
    (250): the retry asking for all 300 in one page is refused, so recovery searches narrower windows (which
    this server answers completely) instead of failing the type on every run."""
    fake = fake_server()
    store = [obs(i) for i in range(1, 5)]

    def observation(_path: str, q: dict[str, list[str]]) -> Reply:
        if int(q.get("_count", ["200"])[0]) > 250:
            body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}
            return status, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)
        if windowed(q):
            found = [o for o in store if in_bounds(q, o["meta"]["lastUpdated"])]
            return searchset(found, total=len(found))
        return searchset(store[:2], total=300)

    fake.routes["/fhir/Observation"] = observation
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        set_mark(world, conn, datetime(2026, 9, 1, tzinfo=UTC))
        report = sync_type(world, conn, "Observation")
    assert report.fetched == 4 and not report.incomplete and report.error is None
    assert f"the server refused _count=300 (HTTP {status}, issues: invalid): that retry is not possible" in (
        report.warnings
    )
    assert any("narrower _lastUpdated windows" in w for w in report.warnings) and mark_of(world, conn) == SERVER_MARK


def _sandbox_world(tmp_path: Any, name: str, http: httpx.Client) -> SyncWorld:
    return make_environment(tmp_path / name, http=http, page_size=5)  # several pages of Observations


def _observations(world: SyncWorld) -> list[tuple[Any, ...]]:
    return [r for r in content_fingerprint(world.env.warehouse_target, with_connection=False) if r[0] == "Observation"]


@pytest.mark.parametrize(
    ("kind", "times", "options"),
    [
        ("search_offset_shift", 1, {}),
        ("search_moved_match", 1, {}),
        ("search_overlap", 1, {}),
        ("search_error_outcome", 1, {}),
        ("search_error_outcome", 1, {"severity": "warning"}),
        ("search_deleted_shift", 2, {}),
    ],
)
def test_sandbox_fault_once_is_recovered_with_everything_stored_bdx29_bdx32(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client, kind: str, times: int, options: dict[str, str]
) -> None:
    """BDX-29/BDX-32 against the sandbox: one shifted page (a match repeated, one skipped; said by ``total``, or
    on a server without totals by the repeat alone), one page overlapping the one before (a match repeated, none
    skipped: the sync still stops there, it cannot tell), one page that drops a match and carries an outcome saying
    so (severity error, or only warning ``incomplete``), or a page shifted by a deletion whose total drops by
    one (the first page said the whole total); the run searches again and stores exactly a clean run's rows."""
    clean_world = _sandbox_world(tmp_path, "clean", http)
    assert sync_type(clean_world, connect_patient(clean_world, shared_sb, http=http), "Observation").error is None
    clean = _observations(clean_world)
    assert len(clean) > 10, "needs several pages of 5"
    world = _sandbox_world(tmp_path, "faulty", http)
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, kind, path="/fhir/Observation", times=times, **options)
    report = sync_type(world, conn, "Observation")
    assert report.error is None and not report.incomplete
    assert any(w.startswith("recovered") for w in report.warnings), report.warnings
    assert _observations(world) == clean and mark_of(world, conn) == report.high_water_mark is not None


def test_sandbox_offset_shift_on_every_page_holds_the_mark_until_it_stops_bdx29(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    """BDX-29: every page behind a next link shifted and no asking for everything in one page: the run stores
    what arrived, fails the type and keeps no mark; once the server pages correctly the next run completes."""
    world = _sandbox_world(tmp_path, "w", http)
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "search_offset_shift", path="/fhir/Observation", times=None)
    shared_sb.admin.settings(max_count=5)
    try:
        report = run_sync(world, conn, types=["Observation"])
    finally:
        shared_sb.admin.reset_settings()
    observation = report.types["Observation"]
    assert report.status == "failed" and observation.incomplete and mark_of(world, conn) is None
    assert "search_incomplete" in report.failed_types["Observation"]
    shared_sb.admin.clear_faults()
    again = run_sync(world, conn, types=["Observation"])
    assert again.status == "completed" and not again.types["Observation"].incomplete
    assert mark_of(world, conn) is not None and len(_observations(world)) > 10


def test_sandbox_offset_shift_in_the_deletion_check_tombstones_nothing_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    """BDX-31 against the sandbox: the id listing of the deletion check is shifted; it raises, nothing goes."""
    world = _sandbox_world(tmp_path, "w", http)
    world.env.page_size = 5
    conn = connect_patient(world, shared_sb, http=http)
    assert sync_type(world, conn, "Observation").error is None
    live = warehouse_ids(world, conn)
    shared_sb.admin.settings(max_count=5)  # the listing asks for 1000 a page: make it page
    add_fault(http, shared_sb, "search_offset_shift", path="/fhir/Observation")
    try:
        with pytest.raises(SearchIncompleteError):
            reconcile_deletes(world.env, conn, "Observation")
    finally:
        shared_sb.admin.reset_settings()
    assert warehouse_ids(world, conn) == live and len(live) > 10
