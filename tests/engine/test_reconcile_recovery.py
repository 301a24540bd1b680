"""BDX-31's id listing also finds what a search skipped without saying so (the sandbox's ``search_silent_skip``:
offset paging without totals after a match already read was deleted). The sync cannot see the skip, so its mark
moves past the skipped resource; the weekly reconciliation reads back every id the server lists that the
warehouse lacks, so the loss lasts until then, not forever."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from engine import deletes, hold_connection, land_resource_type, reconcile_deletes, upsert_resource_type
from sandbox import SandboxServer
from tests.engine.helpers import (
    PATIENT_SCOPE,
    SyncWorld,
    add_fault,
    connect_patient,
    content_fingerprint,
    make_environment,
    mutate,
)
from tests.engine.job_runs import run_sync, sync_type
from tests.engine.search_servers import mark_of


def _world(tmp_path: Any, name: str, http: httpx.Client) -> SyncWorld:
    return make_environment(tmp_path / name, http=http, page_size=5)  # several pages of Observations


def _observations(world: SyncWorld) -> list[tuple[Any, ...]]:
    return [r for r in content_fingerprint(world.env.warehouse_target, with_connection=False) if r[0] == "Observation"]


def tombstoned_then_recreated(world: SyncWorld, sb: SandboxServer, http: httpx.Client) -> tuple[str, str, str]:
    """A connected patient synced, one of its resources deleted on the server and tombstoned by the reconciliation,
    then re-created under its id: (connection, type, id)."""
    conn = connect_patient(world, sb, http=http)
    assert run_sync(world, conn).status == "completed"
    (ref,) = mutate(http, sb, delete=1)["deleted"]
    rtype, rid = ref.split("/")
    assert reconcile_deletes(world.env, conn, rtype).tombstoned == 1
    assert sb.admin.restore(ref) == [ref]
    return conn, rtype, rid


def _skipped_sync(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client, scope: str = PATIENT_SCOPE
) -> tuple[SyncWorld, str, list[Any]]:
    """A clean world's Observations, and a world whose sync met one silently skipped page (one fewer stored)."""
    clean_world = _world(tmp_path, "clean", http)
    assert sync_type(clean_world, connect_patient(clean_world, shared_sb, http=http), "Observation").error is None
    clean = _observations(clean_world)
    assert len(clean) > 10, "needs several pages of 5"
    world = _world(tmp_path, "skipped", http)
    conn = connect_patient(world, shared_sb, http=http, scope=scope)
    add_fault(http, shared_sb, "search_silent_skip", path="/fhir/Observation", times=1)
    report = sync_type(world, conn, "Observation")
    assert report.error is None and not report.incomplete and mark_of(world, conn) is not None  # nothing showed it
    assert len(_observations(world)) == len(clean) - 1
    return world, conn, clean


def test_reconciliation_reads_back_what_a_search_skipped_silently_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    """The skipped Observation is listed by the server but not stored: read back by id and upserted, so the
    warehouse equals a clean sync's; nothing is tombstoned, and a second reconciliation finds nothing unlisted."""
    world, conn, clean = _skipped_sync(tmp_path, shared_sb, http)
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.tombstoned == 0 and report.unlisted == 1 and not report.mark_cleared
    assert report.recovered is not None and report.recovered.fetched == report.recovered.created == 1
    assert _observations(world) == clean
    again = reconcile_deletes(world.env, conn, "Observation")
    assert again.unlisted == 0 and again.recovered is None


def test_too_many_unlisted_ids_clear_the_mark_for_a_whole_search_instead_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``RECOVER_MAX_IDS`` unlisted ids the reconciliation reads none back one by one: it clears the type's
    mark, and the next sync searches the whole type and stores what was skipped."""
    world, conn, clean = _skipped_sync(tmp_path, shared_sb, http)
    monkeypatch.setattr(deletes, "RECOVER_MAX_IDS", 0)
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.unlisted == 1 and report.recovered is None and report.mark_cleared
    assert mark_of(world, conn) is None and len(_observations(world)) == len(clean) - 1
    assert sync_type(world, conn, "Observation").error is None
    assert _observations(world) == clean and mark_of(world, conn) is not None


def test_reconciliation_reads_back_a_recreated_resource_without_last_updated_and_lifts_its_tombstone_bdx31(
    start_sandbox: Any, tmp_path: Any, http: httpx.Client
) -> None:
    """A server that never sends ``meta.lastUpdated``: a resource the reconciliation tombstoned, then re-created
    under its id, is listed by the next reconciliation; the copy read back is dated by that listing (the server's
    time, after the deletion), so it is live again. Before, a read-back copy carried no time and stayed deleted."""
    sb = start_sandbox(patients=1, omit_last_updated=True)
    world = _world(tmp_path, "w", http)
    conn, rtype, rid = tombstoned_then_recreated(world, sb, http)
    report = reconcile_deletes(world.env, conn, rtype)
    assert report.unlisted == 1 and report.recovered is not None and report.recovered.updated == 1
    with world.env.warehouse() as wh:
        assert rid in wh.live_ids(conn, rtype)


def test_a_cleared_mark_stays_cleared_when_a_landing_that_waited_for_its_upsert_commits_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync's landing and upsert steps take the connection's lock one after the other, so a reconciliation can
    run between them (or while a failed upsert waits for its retry). The mark it clears must not come back when
    that landing's upsert commits: its pending mark is as much past the skipped resource as the stored one was,
    and the next sync would search from it and never see the skipped resource."""
    world, conn, clean = _skipped_sync(tmp_path, shared_sb, http)
    env, run_id = world.env, "landed-before-the-reconciliation"
    with hold_connection(env, conn, run_id):
        assert land_resource_type(env, conn, "Observation", run_id).error is None  # pending, not upserted
    monkeypatch.setattr(deletes, "RECOVER_MAX_IDS", 0)
    assert reconcile_deletes(env, conn, "Observation").mark_cleared
    with hold_connection(env, conn, run_id):
        assert upsert_resource_type(env, conn, "Observation", run_id).error is None
    assert mark_of(world, conn) is None
    assert sync_type(world, conn, "Observation").error is None
    assert _observations(world) == clean and mark_of(world, conn) is not None


def test_a_read_back_that_fails_is_reported_and_keeps_the_tombstones_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listed id the server will not read (an error on that one resource, every time) fails the read-back of its
    type, which is reported on the type (``recovered.error``) with the tombstones already made, instead of raising
    out of the reconciliation: the job goes on to the other types (and fails at the end, naming this one), where
    an exception would stop every later type's deletion reconciliation each week for as long as the id stays."""
    world, conn, clean = _skipped_sync(tmp_path, shared_sb, http)
    stored = {r[1] for r in _observations(world)}
    (skipped,) = [r[1] for r in clean if r[1] not in stored]
    monkeypatch.setattr(deletes, "can_search_by_id", lambda *_: False)  # read by id, one request per id
    add_fault(http, shared_sb, "500", path=f"/fhir/Observation/{skipped}", times=None)
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.unlisted == 1 and report.recovered is not None and report.recovered.fetched == 0
    assert report.recovered.error is not None and "fhir_server_error" in report.recovered.error
    assert len(_observations(world)) == len(clean) - 1


def test_a_grant_that_allows_search_but_not_read_clears_the_mark_instead_of_reading_back_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    """SMART v2 ``patient/Observation.s`` without ``.r``: reading the unlisted ids back is not granted, so the
    reconciliation clears the type's mark and the next sync's search brings what was skipped. Before, the read-back
    was skipped as not granted and the resource stayed missing."""
    scope = "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.s"
    world, conn, clean = _skipped_sync(tmp_path, shared_sb, http, scope)
    report = reconcile_deletes(world.env, conn, "Observation")
    assert report.unlisted == 1 and report.recovered is None and report.mark_cleared
    assert sync_type(world, conn, "Observation").error is None
    assert _observations(world) == clean and mark_of(world, conn) is not None


def test_a_live_row_tombstoned_before_deletions_were_confirmed_is_revived_by_the_next_reconciliation_bdx31(
    tmp_path: Any, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    """Before each deletion was confirmed (``engine.delete_confirm``), an id listing that skipped a live match
    without saying so tombstoned it. Such a row (stored by an earlier release) is listed by the next
    reconciliation; the copy read back is unchanged (its ``lastUpdated`` is older than the tombstone) but was
    answered after it, so the row is live again as before."""
    world = _world(tmp_path, "w", http)
    conn = connect_patient(world, shared_sb, http=http)
    assert sync_type(world, conn, "Observation").error is None
    before = _observations(world)
    wrongly = before[0][1]
    with world.env.warehouse() as wh:  # after the sync's search on the same clock, before the listing
        assert wh.tombstone(conn, "Observation", [wrongly], datetime.now(UTC)) == 1
    assert len(_observations(world)) == len(before) and wrongly not in _live_ids(world, conn)
    again = reconcile_deletes(world.env, conn, "Observation")
    assert again.unlisted == 1 and again.recovered is not None and again.recovered.updated == 1
    assert _observations(world) == before


def _live_ids(world: SyncWorld, conn: str) -> set[str]:
    with world.env.warehouse() as wh:
        return wh.live_ids(conn, "Observation")
