"""Incremental REST sync against servers that misbehave, over a real socket (issue 10).

Searchsets that stop early (``total`` says more, no ``next``; a ``next`` that repeats) never move the mark past
unseen data and are recovered (smaller pages, narrower ``_lastUpdated`` windows), or else fail the run with what
arrived stored; an unreachable EHR fails each step at once with one line; a step over its time budget fails that
type's step (so the run, which is retried), its mark untouched, the other types stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.budgets import forget_unreachable
from connectors.errors import EhrUnreachableError
from connectors.fhir import RetryPolicy
from engine import cursors, runs
from engine.connection_info import load_connection
from engine.environment import SyncEnvironment
from sandbox import SandboxServer
from store import SharedRateBudget
from store.models import Connection
from store.rate_windows import RateSlot
from tests.engine.conftest import RequestLog
from tests.engine.helpers import (
    SyncWorld,
    add_fault,
    connect_patient,
    connect_static,
    content_fingerprint,
    make_environment,
)
from tests.engine.job_runs import run_sync, sync_type

OBS = ["Observation"]


def _world(tmp_path: Path, name: str, http: httpx.Client, **knobs: Any) -> SyncWorld:
    return make_environment(tmp_path / name, http=http, page_size=5, **knobs)


def _observations(world: SyncWorld) -> list[tuple[Any, ...]]:
    return [row for row in content_fingerprint(world.env.warehouse_target, with_connection=False) if row[0] in OBS]


def _clean(tmp_path: Path, sb: SandboxServer, http: httpx.Client) -> list[tuple[Any, ...]]:
    """What a run against a well-behaved server stores."""
    world = _world(tmp_path, "clean", http)
    report = sync_type(world, connect_patient(world, sb, http=http), "Observation")
    assert report.error is None
    return _observations(world)


def _mark(world: SyncWorld, conn: str) -> datetime | None:
    return cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation")


@pytest.mark.parametrize("kind", ["search_no_next", "search_repeat_next"])
def test_search_that_stops_early_once_is_recovered_in_the_same_run(
    tmp_path: Path, shared_sb: SandboxServer, http: httpx.Client, kind: str
) -> None:
    clean = _clean(tmp_path, shared_sb, http)
    assert len(clean) > 10, "needs several pages of 5"
    world = _world(tmp_path, "faulty", http)
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, kind, path="/fhir/Observation")
    obs = sync_type(world, conn, "Observation")
    assert obs.error is None
    assert not obs.incomplete and any("stopped early" in w or "repeated" in w for w in obs.warnings)
    assert any(w.startswith("recovered") for w in obs.warnings), obs.warnings
    assert _observations(world) == clean
    assert _mark(world, conn) == obs.high_water_mark is not None


def test_unrecoverable_early_stop_keeps_the_mark_and_the_next_run_fetches_the_rest(
    tmp_path: Path, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    clean = _clean(tmp_path, shared_sb, http)
    world = _world(tmp_path, "faulty", http)
    conn = connect_patient(world, shared_sb, http=http)
    add_fault(http, shared_sb, "search_no_next", path="/fhir/Observation", times=None)  # every multi-page search
    shared_sb.admin.settings(max_count=10)  # and no asking for everything in one page
    try:
        report = run_sync(world, conn, types=OBS)  # the whole job: what arrived is stored, then the run fails
    finally:
        shared_sb.admin.reset_settings()
    obs = report.types["Observation"]
    assert obs.incomplete and obs.high_water_mark is None and _mark(world, conn) is None
    assert any(w.startswith("not recovered") for w in obs.warnings)
    assert report.status == "failed" and "search_incomplete" in report.failed_types["Observation"]  # not "ok"
    counted = runs.require(world.env.db, report.run_id).counts["Observation"]
    assert counted["incomplete"] is True and counted["warnings"] == obs.warnings
    assert 0 < len(_observations(world)) < len(clean)

    shared_sb.admin.clear_faults()
    again = run_sync(world, conn, types=OBS)
    assert again.status == "completed" and again.error is None and not again.types["Observation"].incomplete
    assert _observations(world) == clean
    assert _mark(world, conn) is not None


def _set_mark(world: SyncWorld, conn: str, mark: datetime) -> None:
    with world.env.db.locked_session() as session:
        cursors.advance(session, conn, cursors.REST_STREAM, "Observation", "test-rewind", mark)
        session.commit()


def test_incremental_early_stop_is_recovered_with_last_updated_windows(
    tmp_path: Path, shared_sb: SandboxServer, http: httpx.Client, request_log: RequestLog
) -> None:
    clean = _clean(tmp_path, shared_sb, http)
    world = _world(tmp_path, "faulty", http)
    world.env.page_size = 20
    conn = connect_patient(world, shared_sb, http=http)
    assert sync_type(world, conn, "Observation").error is None
    _set_mark(world, conn, datetime(2000, 1, 1, tzinfo=UTC))  # the next search returns everything since 2000
    add_fault(http, shared_sb, "search_no_next", path="/fhir/Observation", times=None)  # every multi-page search
    shared_sb.admin.settings(max_count=20)  # and no asking for everything in one page
    request_log.clear()
    try:
        obs = sync_type(world, conn, "Observation")
    finally:
        shared_sb.admin.reset_settings()
    assert obs.error is None and not obs.incomplete, obs.warnings
    assert any("narrower _lastUpdated windows" in w for w in obs.warnings), obs.warnings
    windows = [u for u in request_log.paths("/fhir/Observation") if len(u.params.get_list("_lastUpdated")) == 2]
    assert windows and all(sorted(v[:2] for v in u.params.get_list("_lastUpdated")) == ["ge", "lt"] for u in windows)
    assert obs.fetched == len(clean)
    assert _mark(world, conn) == obs.high_water_mark


def test_unreachable_ehr_fails_each_step_within_seconds_with_one_line(
    refused_port: int, tmp_path: Path, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The first step finds the host refusing connections; the next step fails at once with the same line
    (the whole job through Dagster: tests/pipelines/test_unreachable_run.py)."""
    base = f"http://127.0.0.1:{refused_port}"
    world = make_environment(tmp_path / "w", http=http, retry=RetryPolicy())  # real backoff: minutes per type before
    conn = connect_static(world, f"{base}/fhir", patient_id="p1")
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    errors: list[EhrUnreachableError] = []
    try:
        for resource_type in ("Patient", "Observation"):
            with pytest.raises(EhrUnreachableError) as raised:
                sync_type(world, conn, resource_type)
            errors.append(raised.value)
    finally:
        forget_unreachable(base)
    assert time.monotonic() - started < 10
    assert [e.code for e in errors] == ["ehr_unreachable"] * 2
    assert all(str(e).startswith(f"cannot reach the EHR at {base} ") for e in errors)
    assert "remembered from an earlier request" in str(errors[1])  # no second attempt, no retries


def test_step_over_its_budget_fails_that_type_and_keeps_its_mark(
    tmp_path: Path, start_sandbox: Any, http: httpx.Client
) -> None:
    sb = start_sandbox(patients=1)
    # 5 s, not 1.5: every type's landing step has the budget, and on a busy CI machine an unfaulted one may take
    # over a second; the trickled Observation page (a byte per 0.2 s) needs minutes
    world = _world(tmp_path, "w", http, step_budget_s=5)
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "trickle", path="/fhir/Observation", delay_s=0.2)
    started = time.monotonic()
    report = run_sync(world, conn, types=["Patient", "Observation", "Condition"])
    assert time.monotonic() - started < 60
    assert report.status == "failed" and set(report.failed_types) == {"Observation"}  # retried, the others stored
    error = report.types["Observation"].error
    assert error is not None and "landing Observation exceeded its 5 s" in error
    assert _mark(world, conn) is None
    assert report.types["Patient"].error is None and report.types["Condition"].error is None


def test_reference_search_that_stops_early_reads_the_missing_ones(
    tmp_path: Path, start_sandbox: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """An ``_id`` search for referenced resources that loses its next link: the rest are read one by one."""
    sb = start_sandbox(patients=1, max_count=1)  # every search pages one resource at a time
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "search_no_next", path="/fhir/Practitioner", times=None)
    report = run_sync(world, conn, types=["Encounter"])
    practitioners = report.types["Practitioner"]
    assert report.status == "completed" and report.error is None, report.error
    assert practitioners.error is None and practitioners.fetched >= 2
    reads = [u for u in request_log.paths("/fhir/Practitioner/")]
    assert len(reads) == practitioners.fetched - 1  # the first came with the search page, the rest by read
    assert cursors.queued_references(world.env.db, conn) == []


def test_vendor_rate_budget_is_shared_by_every_step_of_the_process(
    tmp_path: Path, start_sandbox: Any, http: httpx.Client
) -> None:
    """Dagster builds an environment per step: the vendor budget (generic: 5 calls/s) must not start afresh."""
    sb = start_sandbox(patients=1)
    first = _world(tmp_path, "a", http, rate_limits=True)
    conn_id = connect_patient(first, sb, http=http)
    conn = load_connection(first.env.db, conn_id)
    second = make_environment(tmp_path / "b", http=http, rate_limits=True)  # the next step's environment
    with first.env.fhir_client(conn) as client:  # one step spends the whole bucket over the socket
        for _ in range(8):
            client.read("Patient", str(conn.patient_id))
    limiter = second.env.rate_limiter(conn)
    assert limiter is not None and limiter is first.env.rate_limiter(conn)
    assert limiter.acquire(conn.fhir_base) > 0  # the next call waits: the bucket was not refilled for the step


def test_a_budget_the_vendor_counts_across_callers_is_kept_in_the_app_database(
    tmp_path: Path, start_sandbox: Any, http: httpx.Client
) -> None:
    """vendors.md §4: eCW counts every caller of a practice base, so two processes' environments (two Dagster runs)
    spend one budget kept in the app database: what one spent, the other sees."""
    sb = start_sandbox(patients=1)
    first = _world(tmp_path, "a", http, rate_limits=True)
    conn = replace(load_connection(first.env.db, connect_patient(first, sb, http=http)), provider_id="ecw")
    other_process = SyncEnvironment(**{**vars(first.env), "_limiters": {}})  # the same app database, fresh memory
    mine, theirs = first.env.rate_limiter(conn), other_process.rate_limiter(conn)
    assert isinstance(mine, SharedRateBudget) and isinstance(theirs, SharedRateBudget) and mine is not theirs
    now = [1_000_000.0]  # one clock for both, so the slot cannot roll over while the test runs
    for budget in (mine, theirs):
        budget._clock, budget._sleep = (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))
    assert [mine.acquire(conn.fhir_base) for _ in range(mine.per_slot)] == [0.0] * mine.per_slot
    assert theirs.acquire(conn.fhir_base) == pytest.approx(mine.slot_s)  # the slot was spent by the other process


def test_reference_step_has_a_time_budget_and_keeps_its_queue(
    tmp_path: Path, start_sandbox: Any, http: httpx.Client
) -> None:
    sb = start_sandbox(patients=1)
    world = _world(tmp_path, "w", http, step_budget_s=5)  # not 1.5: the unfaulted Encounter step has it too
    conn = connect_patient(world, sb, http=http)
    add_fault(http, sb, "trickle", path="/fhir/Practitioner", delay_s=0.2)
    report = run_sync(world, conn, types=["Encounter"])
    assert report.status == "failed"
    error = report.types["Practitioner"].error
    assert error is not None and "step_budget_exceeded: reading referenced resources exceeded" in error
    assert report.types["Encounter"].error is None
    assert any(ref.startswith("Practitioner/") for ref in cursors.queued_references(world.env.db, conn))


def test_a_saturated_shared_budget_fails_the_step_as_throttled_within_its_budget_and_keeps_its_mark(
    tmp_path: Path, start_sandbox: Any, http: httpx.Client
) -> None:
    """Other callers spent eCW's shared budget: a step's requests wait for a free call no longer than the step may
    run, then the type fails as throttled (``call_budget_busy``, a RateLimitedError: the run is retried with
    backoff), its mark untouched, instead of waiting for as long as the others keep the budget spent."""
    sb = start_sandbox(patients=1)
    world = _world(tmp_path, "w", http, rate_limits=True, step_budget_s=1.5)
    conn = connect_patient(world, sb, http=http)
    with world.env.db.session() as session, session.begin():
        row = session.get(Connection, conn)
        assert row is not None
        row.provider_id, fhir_base = "ecw", row.fhir_base
    budget = world.env.rate_limiter(load_connection(world.env.db, conn))
    assert isinstance(budget, SharedRateBudget)
    first, hashed = int(time.time() // budget.slot_s), hashlib.sha256(fhir_base.encode()).hexdigest()
    with world.env.db.session() as session, session.begin():  # the next 60 s are spent by other processes
        session.add_all(RateSlot(key=hashed, slot=first + i, used=budget.per_slot) for i in range(25))
    started = time.monotonic()
    report = run_sync(world, conn, types=OBS)
    assert time.monotonic() - started < 30
    assert report.status == "failed" and set(report.failed_types) == {"Observation"}  # retried with backoff
    error = report.failed_types["Observation"]
    assert "no free call within what is left of landing Observation's 1.5 s budget" in error, error
    assert _mark(world, conn) is None
