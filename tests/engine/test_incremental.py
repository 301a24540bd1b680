"""Incremental REST sync of patient connections against the sandbox over a real socket (BDX-26..33)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta

import httpx

from engine import PATIENT_TYPES, SCOPE_NOT_GRANTED, cursors, reconcile_deletes, runs
from engine.search_recovery import format_instant
from store.models import Connection
from tests.engine.helpers import connect_patient, content_fingerprint, make_environment, mutate
from tests.engine.job_runs import run_sync
from tests.engine.test_reconcile_recovery import tombstoned_then_recreated

# Whole runs are production's Dagster job; a test about one property runs a few types (and their references).
SOME_TYPES = ["Patient", "Encounter", "Observation"]


def _live(world, connection_id):
    with world.env.warehouse() as wh:
        return {(r["resource_type"]): r["live"] for r in wh.summary() if r["connection_id"] == connection_id}


def test_first_sync_lands_every_type_then_only_changes_bdx26_27_28(world, shared_sb, http, request_log):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    first = run_sync(world, conn)
    assert first.status == "completed", first.error
    assert first.failed_types == {}
    assert first.types["Patient"].created == 1
    assert first.types["Observation"].created > 0 and first.types["Observation"].pages >= 1
    live = _live(world, conn)
    for rtype in PATIENT_TYPES:
        report = first.types[rtype]
        assert report.created == live.get(rtype, 0) == report.fetched - report.quarantined, rtype
        assert report.high_water_mark is not None
        assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, rtype) == report.high_water_mark
    first_searches = request_log.paths("/fhir/Observation")
    assert first_searches and all("_lastUpdated" not in u.params for u in first_searches)

    request_log.clear()
    second = run_sync(world, conn)
    assert second.status == "completed", second.error
    assert all(r.created == 0 and r.updated == 0 for r in second.types.values())
    searches = [u for u in request_log.paths("/fhir/Observation") if "patient" in u.params]
    assert searches, "the second run must search again"
    assert len(request_log.paths("/fhir/metadata")) == 1  # one CapabilityStatement per run, not one per step
    assert world.env.overlap == timedelta(minutes=5)  # BDX-28's default overlap (ehrsync's own: 300 s in settings)
    mark = first.types["Observation"].high_water_mark - world.env.overlap
    assert all(u.params["_lastUpdated"].startswith("gt") for u in searches)
    assert searches[0].params["_lastUpdated"] == "gt" + format_instant(mark)  # server mark minus overlap
    history = runs.history(world.env.db, conn)
    assert [r.status for r in history] == ["completed", "completed"]
    with world.env.db.session() as session:  # stamped by the run that succeeded last, at its end
        assert session.get(Connection, conn).last_sync_at == history[0].finished_at
    assert history[1].counts["Observation"]["created"] == first.types["Observation"].created


def _is_id_search(url: httpx.URL, types: Iterable[str]) -> bool:
    return url.path.rsplit("/", 1)[1] in types and "_id" in url.params


def test_referenced_resources_are_fetched_once_in_id_batches(world, shared_sb, http, request_log):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    report = run_sync(world, conn, types=["Encounter"])  # encounters reference all three
    assert report.status == "completed", report.error
    referenced = {t: r for t, r in report.types.items() if t in ("Practitioner", "Organization", "Location")}
    assert referenced, "sandbox encounters reference practitioners/organizations/locations"
    reads = [u for u in request_log.urls if u.path.split("/")[-2] in referenced]
    searches = Counter(u.path.rsplit("/", 1)[1] for u in request_log.urls if _is_id_search(u, referenced))
    assert reads == []  # the sandbox declares search-type and the grant has .s: one `_id` search per type
    assert searches == dict.fromkeys(referenced, 1)
    live = _live(world, conn)
    counts = runs.require(world.env.db, report.run_id).counts  # the run's row counts referenced types too
    for rtype, r in referenced.items():
        assert r.fetched == live[rtype] == counts[rtype]["fetched"] > 0


def test_changes_and_deletes_are_picked_up_bdx31(start_sandbox, world, http):
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http)
    assert run_sync(world, conn).status == "completed"
    before = _live(world, conn)
    changes = mutate(http, sb, create=4, update=3, delete=3)
    after_sync = run_sync(world, conn)
    assert after_sync.status == "completed", after_sync.error
    created = Counter(ref.split("/")[0] for ref in changes["created"])
    assert sum(r.created for r in after_sync.types.values()) == sum(created.values())
    assert sum(r.updated for r in after_sync.types.values()) >= 1

    deleted = Counter(ref.split("/")[0] for ref in changes["deleted"])
    for rtype, n in deleted.items():
        assert reconcile_deletes(world.env, conn, rtype).tombstoned == n
        assert reconcile_deletes(world.env, conn, rtype).tombstoned == 0  # idempotent
    live = _live(world, conn)
    for rtype in set(created) | set(deleted):
        assert live.get(rtype, 0) == before.get(rtype, 0) + created[rtype] - deleted[rtype]


def test_bdx31_a_resource_recreated_on_a_server_without_last_updated_is_live_again(start_sandbox, world, http):
    """A server that never sends ``meta.lastUpdated``: a resource the reconciliation tombstoned, then re-created on
    the server under its id, is live again after the next sync, as the server serves it. Before, only a newer
    ``lastUpdated`` lifted a tombstone, so the warehouse said "deleted" for good while the server served it."""
    sb = start_sandbox(patients=1, omit_last_updated=True)
    conn, rtype, rid = tombstoned_then_recreated(world, sb, http)
    again = run_sync(world, conn)
    assert again.status == "completed", again.error
    assert again.types[rtype].updated == 1
    with world.env.warehouse() as wh:
        assert rid in wh.live_ids(conn, rtype)
        sql = "SELECT last_updated, transaction_time, resource FROM fhir_resources WHERE connection_id = %s AND id = %s"
        (row,) = wh.iter_rows(sql, (conn, rid))
    resource = row["resource"] if isinstance(row["resource"], dict) else json.loads(row["resource"])
    assert resource["meta"] == {"versionId": "2"} and row["last_updated"] is None
    # the copy's transaction_time is the search's first-page time on the server's clock (its BDX-27 mark)
    assert row["transaction_time"] == again.types[rtype].high_water_mark


def test_sal21_type_outside_granted_scopes_is_skipped_not_failed(world, shared_sb, http):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http, scope="launch/patient patient/Patient.rs patient/Condition.rs")
    report = run_sync(world, conn, types=SOME_TYPES)
    assert report.status == "completed"
    assert report.types["Patient"].created == 1
    assert report.types["Observation"].skipped_reason == SCOPE_NOT_GRANTED
    assert report.types["Observation"].error is None
    assert report.failed_types == {}
    run = runs.require(world.env.db, report.run_id)
    assert run.counts["Observation"]["skipped_reason"] == SCOPE_NOT_GRANTED


def test_rerun_changes_nothing_bdx24(world, shared_sb, http):
    sb = shared_sb
    conn = connect_patient(world, sb, http=http)
    assert run_sync(world, conn, types=SOME_TYPES).status == "completed"
    with world.env.warehouse() as wh:
        before = wh.row_fingerprint()
    content = content_fingerprint(world.env.warehouse_target)
    again = run_sync(world, conn, full=True, types=SOME_TYPES)
    assert again.status == "completed"
    assert sum(r.unchanged for r in again.types.values()) > 0
    with world.env.warehouse() as wh:
        assert wh.row_fingerprint() == before
    assert content_fingerprint(world.env.warehouse_target) == content


def test_sync_on_postgres_app_db_and_warehouse(tmp_path, shared_sb, http, postgres_url):
    """Production runs on PostgreSQL for both stores; the engine must not depend on SQLite/DuckDB behaviour."""
    world = make_environment(tmp_path / "pg", http=http, app_db_url=postgres_url, warehouse_target=postgres_url)
    conn = connect_patient(world, shared_sb, http=http)
    first = run_sync(world, conn, types=SOME_TYPES)
    assert first.status == "completed" and first.failed_types == {}, first.error
    live = _live(world, conn)
    assert live["Observation"] == first.types["Observation"].created > 0
    again = run_sync(world, conn, full=True, types=SOME_TYPES)
    assert sum(r.created + r.updated for r in again.types.values()) == 0
    assert [r.status for r in runs.history(world.env.db, conn)] == ["completed", "completed"]


def test_incremental_reads_only_new_references_full_rereads_them(start_sandbox, world, http, request_log):
    """Incremental cost follows what changed: shared resources already stored are not read again; a full sync
    refreshes them (they change rarely and have no patient-compartment search)."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http)
    first = run_sync(world, conn)
    assert first.status == "completed", first.error
    assert first.types["Practitioner"].fetched > 0

    mutate(http, sb, update=3)
    request_log.clear()
    incremental = run_sync(world, conn)
    assert incremental.status == "completed", incremental.error
    assert sum(r.updated for r in incremental.types.values()) >= 1
    shared = ("Practitioner", "Organization", "Location", "Medication")
    assert not [u for u in request_log.urls if u.path.split("/")[-2] in shared or _is_id_search(u, shared)]
    assert all(incremental.types[t].fetched == 0 for t in shared if t in incremental.types)

    request_log.clear()
    full = run_sync(world, conn, full=True)
    assert full.status == "completed", full.error
    assert full.types["Practitioner"].fetched == first.types["Practitioner"].fetched
    assert [u for u in request_log.urls if _is_id_search(u, ("Practitioner",))]
