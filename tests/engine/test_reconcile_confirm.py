"""BDX-31: an id the listing lacks is only a candidate for deletion. An offset-paged server without a ``total``
that has a match deleted while the listing pages skips one that still exists (the sandbox's
``search_silent_skip``), and reads by id still return it; the reconciliation asks for each candidate again
(``_id`` searches, else reads by id, capped) and tombstones only those the server confirms gone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from engine import ReconcileReport, delete_confirm, reconcile_deletes
from engine.connection_info import load_connection
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, make_environment, mutate
from tests.engine.job_runs import sync_type

OBS = "/fhir/Observation"


def _live(world: SyncWorld, conn: str) -> set[str]:
    with world.env.warehouse() as wh:
        return wh.live_ids(conn, "Observation")


def _synced_then_deleted(world: SyncWorld, sb: SandboxServer, http: httpx.Client) -> tuple[str, set[str], set[str]]:
    """A patient's Observations synced, then some of them deleted on the server: (connection, live ids, deleted)."""
    conn = connect_patient(world, sb, http=http)
    assert sync_type(world, conn, "Observation").error is None
    live = _live(world, conn)
    assert len(live) > 10, "needs several listing pages of 5"
    refs: list[str] = mutate(http, sb, delete=25)["deleted"]
    deleted = {ref.split("/")[1] for ref in refs if ref.startswith("Observation/")}
    assert len(deleted) >= 2 and deleted <= live
    return conn, live, deleted


@contextmanager
def _listing_skips_one(sb: SandboxServer, http: httpx.Client) -> Iterator[None]:
    """The id listing pages 5 at a time (it asks for 1000) and a page reached by a next link skips its first
    match, saying nothing, as after a match already listed was deleted."""
    sb.admin.settings(max_count=5)
    add_fault(http, sb, "search_silent_skip", path=OBS, times=1)
    try:
        yield
    finally:
        sb.admin.reset_settings()


def _reads(request_log: RequestLog) -> list[str]:
    return [u.path.rsplit("/", 1)[1] for u in request_log.paths(f"{OBS}/")]


def _id_searches(request_log: RequestLog) -> list[httpx.URL]:
    return [u for u in request_log.paths(OBS) if u.path == OBS and "_id" in u.params]


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_a_live_resource_the_listing_skipped_is_not_tombstoned_bdx31(
    start_sandbox: Callable[..., SandboxServer],
    tmp_path: Any,
    http: httpx.Client,
    request_log: RequestLog,
    request: pytest.FixtureRequest,
    warehouse: str,
) -> None:
    """The listing skips one live Observation besides those really deleted: one ``_id`` search asks for every
    candidate; the skipped one comes back (alive: kept live, its copy landed) and those absent from that complete
    answer are tombstoned, with no read by id. Before, the skipped one was tombstoned with the deleted ones."""
    sb = start_sandbox(patients=1)
    target = request.getfixturevalue("postgres_url") if warehouse == "postgres" else None
    world = make_environment(tmp_path / "w", http=http, page_size=5, warehouse_target=target)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    request_log.clear()
    with _listing_skips_one(sb, http):
        report = reconcile_deletes(world.env, conn, "Observation")
    assert report.tombstoned == len(deleted) and report.alive == 1 and report.unconfirmed == 0
    assert report.confirm_error is None and report.checked is not None and report.checked.fetched == 1
    assert _live(world, conn) == live - deleted
    (search,) = _id_searches(request_log)
    assert set(search.params["_id"].split(",")) > deleted and _reads(request_log) == []
    again = reconcile_deletes(world.env, conn, "Observation")
    assert again == ReconcileReport("Observation") and _live(world, conn) == live - deleted


def test_without_id_search_each_candidate_is_read_404_410_confirm_200_keeps_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """A server that ignores ``_id`` (it answers with every match, ids not asked for): each candidate is read by
    id; the deleted ones answer 410 and are tombstoned, the skipped one answers 200 and stays live."""
    sb = start_sandbox(patients=1, ignored_search_params=["_id"])
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    request_log.clear()
    with _listing_skips_one(sb, http):
        report = reconcile_deletes(world.env, conn, "Observation")
    assert report.tombstoned == len(deleted) and report.alive == 1 and report.unconfirmed == 0
    assert _live(world, conn) == live - deleted
    assert deleted < set(_reads(request_log)) and len(_reads(request_log)) == len(deleted) + 1


def test_a_candidate_whose_read_is_refused_403_stays_live_unconfirmed_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client
) -> None:
    """A 403 to the read of one candidate (Epic refuses an API not on the app, vendors.md §2) is about that
    resource, never a deletion: it stays live and unconfirmed, the report names the refusal, and the other
    candidates are still read and the deleted ones tombstoned."""
    sb = start_sandbox(patients=1, ignored_search_params=["_id"])
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    refused = min(deleted)
    add_fault(http, sb, "403", path=f"{OBS}/{refused}", times=None)
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.tombstoned == len(deleted) - 1 and report.unconfirmed == 1 and report.alive == 0
    assert report.confirm_error is not None and "403" in report.confirm_error
    assert _live(world, conn) == live - deleted | {refused}


def test_an_outage_while_confirming_tombstones_nothing_unconfirmed_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client
) -> None:
    """Reads by id fail from the last candidate on (the connection drops, every retry): the candidates read before
    it are settled (the deleted ones tombstoned), the last stays live and unconfirmed, and the report names the
    failure. With every read failing nothing is tombstoned; once the server answers, the rest is."""
    sb = start_sandbox(patients=1, ignored_search_params=["_id"])
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    last = max(deleted)
    add_fault(http, sb, "drop", path=f"{OBS}/{last}", times=None)
    partly = reconcile_deletes(world.env, conn, "Observation")
    assert partly.tombstoned == len(deleted) - 1 and partly.unconfirmed == 1 and partly.alive == 0
    assert partly.confirm_error is not None and last not in partly.confirm_error
    assert _live(world, conn) == live - deleted | {last}
    sb.admin.clear_faults()
    add_fault(http, sb, "drop", path=f"{OBS}/", times=None)
    with _listing_skips_one(sb, http):
        down = reconcile_deletes(world.env, conn, "Observation")
    assert down.tombstoned == 0 and down.unconfirmed == 2 and down.alive == 0 and down.confirm_error is not None
    assert _live(world, conn) == live - deleted | {last}
    sb.admin.clear_faults()
    assert reconcile_deletes(world.env, conn, "Observation").tombstoned == 1
    assert _live(world, conn) == live - deleted


def test_confirming_reads_are_capped_and_the_rest_wait_for_the_next_reconciliation_bdx31(
    start_sandbox: Callable[..., SandboxServer],
    tmp_path: Any,
    http: httpx.Client,
    request_log: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At most ``CONFIRM_MAX_READS`` reads by id a type a reconciliation: the candidates over it stay live,
    counted as unconfirmed, with a warning naming how many (never which); each reconciliation reaches further.
    Where ``_id`` search works, a mass deletion costs searches, not reads, and the cap does not hold it back."""
    sb = start_sandbox(patients=1, ignored_search_params=["_id"])
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    monkeypatch.setattr(delete_confirm, "CONFIRM_MAX_READS", 1)
    request_log.clear()
    with caplog.at_level(logging.WARNING, logger="engine.delete_confirm"):
        first = reconcile_deletes(world.env, conn, "Observation")
    assert first.tombstoned == 1 and first.unconfirmed == len(deleted) - 1 and first.confirm_error is None
    assert _reads(request_log) == [min(deleted)] and _live(world, conn) == live - {min(deleted)}
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "engine.delete_confirm"]
    assert f"{len(deleted) - 1} ids" in warning and not any(rid in warning for rid in live)
    second = reconcile_deletes(world.env, conn, "Observation")
    assert second.tombstoned == 1 and second.unconfirmed == len(deleted) - 2

    batched = start_sandbox(patients=1)
    other = make_environment(tmp_path / "batched", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(other, batched, http)
    monkeypatch.setattr(delete_confirm, "CONFIRM_MAX_READS", 0)
    request_log.clear()
    report = reconcile_deletes(other.env, conn, "Observation")
    assert report.tombstoned == len(deleted) and report.unconfirmed == 0 and _reads(request_log) == []
    assert _live(other, conn) == live - deleted


def _confirm(world: SyncWorld, conn: str, candidates: list[str]) -> delete_confirm.Confirmation:
    with world.env.warehouse() as wh:
        info = load_connection(world.env.db, conn)
        return delete_confirm.confirm_deleted(world.env, info, wh, "confirm-run", "Observation", candidates, None)


def test_an_id_search_answering_an_error_outcome_confirms_nothing_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """The ``_id`` search's only page has no match but an error OperationOutcome (the server could not return the
    matches, and says so): that is no answer, so the live candidate is read by id (200: alive), not tombstoned.
    Before, the search stopped at that page without meeting the outcome and settled the id as gone."""
    sb = start_sandbox(patients=1)
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn = connect_patient(world, sb, http=http)
    assert sync_type(world, conn, "Observation").error is None
    alive = min(_live(world, conn))
    add_fault(http, sb, "search_error_outcome", path=OBS, times=1)
    request_log.clear()
    confirmed = _confirm(world, conn, [alive])
    assert confirmed.gone == [] and confirmed.alive == 1 and confirmed.unconfirmed == 0
    assert len(_id_searches(request_log)) == 1 and _reads(request_log) == [alive]


def test_an_id_search_ending_short_of_its_total_confirms_nothing_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """The ``_id`` search pages 2 at a time and its last page repeats the first match instead of the third (offset
    paging after an update moved a match), saying the total 3: the third, skipped, is read by id and kept live.
    Before, the page of repeats stopped the paging before the total was checked, and the third was tombstoned."""
    sb = start_sandbox(patients=1)
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn = connect_patient(world, sb, http=http)
    assert sync_type(world, conn, "Observation").error is None
    three = sorted(_live(world, conn))[:3]
    sb.admin.settings(max_count=2)
    add_fault(http, sb, "search_offset_shift", path=OBS, times=1)
    request_log.clear()
    try:
        confirmed = _confirm(world, conn, three)
    finally:
        sb.admin.reset_settings()
    assert confirmed.gone == [] and confirmed.alive == 3 and confirmed.unconfirmed == 0
    assert len(_reads(request_log)) == 1


def test_one_resource_answering_5xx_does_not_hold_back_the_ids_after_it_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client
) -> None:
    """A read by id answered 500 every time (one resource the server cannot serve) leaves that id live and
    unconfirmed, and the candidates after it are still read and tombstoned; before, the first such id stopped the
    asking, every week, for every id sorted after it. ``FAILED_READS_IN_A_ROW`` 5xx in a row still stop it."""
    sb = start_sandbox(patients=1, ignored_search_params=["_id"])
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    assert len(deleted) >= 2, deleted
    first = min(deleted)
    add_fault(http, sb, "500", path=f"{OBS}/{first}", times=None)
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.tombstoned == len(deleted) - 1 and report.unconfirmed == 1, report
    assert report.confirm_error is not None and "HTTP 500" in report.confirm_error and first not in report.confirm_error
    assert _live(world, conn) == live - deleted | {first}
    sb.admin.clear_faults()
    assert reconcile_deletes(world.env, conn, "Observation").tombstoned == 1
    assert _live(world, conn) == live - deleted


def test_reads_answering_5xx_one_after_another_stop_the_asking_bdx31(
    start_sandbox: Callable[..., SandboxServer], tmp_path: Any, http: httpx.Client, request_log: RequestLog
) -> None:
    """Every read answered 500: the server is failing, not one resource; the asking stops after
    ``FAILED_READS_IN_A_ROW`` ids (each already retried by the client), nothing is tombstoned."""
    sb = start_sandbox(patients=1, ignored_search_params=["_id"])
    world = make_environment(tmp_path / "w", http=http, page_size=5)
    conn, live, deleted = _synced_then_deleted(world, sb, http)
    assert len(deleted) > delete_confirm.FAILED_READS_IN_A_ROW, deleted
    add_fault(http, sb, "500", path=f"{OBS}/", times=None)
    request_log.clear()
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.tombstoned == 0 and report.unconfirmed == len(deleted) and report.confirm_error is not None
    assert len(set(_reads(request_log))) == delete_confirm.FAILED_READS_IN_A_ROW
    assert _live(world, conn) == live
