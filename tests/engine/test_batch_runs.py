"""Many patient connections of one source in one Dagster run (``incremental_sync_batch``), each isolated.

Through the real job in-process (``run_batch_now``, the job the scheduling sensor requests) against the sandbox:
a member that fails records its own failure and is retried alone; the others complete, move their cursors and
``last_sync_at``, and their per-type assets show the partition materialized.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ehrsync.run_now import BatchNowResult, run_batch_now
from engine import batch_sync, cursors, runs
from engine.batch_sync import close_batch_rows, open_batch_rows, sync_connection
from engine.connection_snapshots import read_connections
from engine.planning import PartitionSets, plan_due_runs
from engine.retries import failure_streaks, source_holds
from pipelines.defs.sync.type_assets import landing_key, warehouse_key
from store import RefreshLockTimeoutError
from store.models import Connection
from tests.engine.helpers import add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import world_resources, world_settings


def _batch(world, ids: list[str], instance: DagsterInstance) -> BatchNowResult:
    settings = world_settings(world)
    return run_batch_now(ids, "generic", settings=settings, instance=instance, resources=world_resources(world))


def batch_after_first(world, ids: list[str], request_log) -> tuple[BatchNowResult, runs.SyncRunRecord, datetime]:
    """Run the batch from a clean request log: (its result, its first member's row, when the run began)."""
    request_log.clear()
    before = datetime.now(UTC)
    with DagsterInstance.ephemeral() as instance:
        result = _batch(world, ids, instance)
    assert not result.success
    stopped = runs.get(world.env.db, result.sync_run_ids[ids[0]])
    assert stopped is not None and stopped.status == "failed", stopped
    return result, stopped, before


def _set_base(world, connection_id: str, base: str) -> str:
    with world.env.db.session() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        before, conn.fhir_base = conn.fhir_base, base
        session.commit()
    return before


def _landing_files(world) -> set[Path]:
    return set(Path(world.env.zone.root).rglob("*.parquet"))


def test_one_run_syncs_many_connections_and_a_failure_stays_its_own(start_sandbox, world, http):
    sb = start_sandbox(patients=3)
    ids = [connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3]]
    good, broken, other = ids
    real_base = _set_base(world, broken, "http://127.0.0.1:9/fhir")  # nothing listens there
    with ExitStack() as stack:
        instance = stack.enter_context(DagsterInstance.ephemeral())
        first = _batch(world, ids, instance)
        assert not first.success  # the run shows the failure; the members keep their own outcomes
        rows = {cid: runs.get(world.env.db, first.sync_run_ids[cid]) for cid in ids}
        assert rows[good].status == rows[other].status == "completed", rows  # type: ignore[union-attr]
        assert rows[broken].status == "failed" and rows[broken].error  # type: ignore[union-attr]
        assert rows[good].counts["Observation"]["created"] > 0  # type: ignore[union-attr]
        assert broken in failure_streaks(world.env.db)  # retried alone, with backoff (engine.retries)
        assert set(failure_streaks(world.env.db)) == {broken}
        assert cursors.get_mark(world.env.db, good, cursors.REST_STREAM, "Observation") is not None
        assert cursors.get_mark(world.env.db, broken, cursors.REST_STREAM, "Observation") is None
        for key in (landing_key("Observation"), warehouse_key("Observation"), warehouse_key("Practitioner")):
            assert instance.get_materialized_partitions(key) == {good, other}, key

        _set_base(world, broken, real_base)
        files = _landing_files(world)
        second = _batch(world, [good, other], instance)
        assert second.success
        assert all(runs.get(world.env.db, rid).status == "completed" for rid in second.sync_run_ids.values())  # type: ignore[union-attr]
        assert _landing_files(world) == files  # nothing new: no landing file for either member


def test_a_batch_that_dies_leaves_its_open_members_failed_for_retry(start_sandbox, world, http):
    """The run-status sensor's rule (``close_batch_rows``): members the run never closed fail; closed ones stay."""
    sb = start_sandbox(patients=2)
    ids = [connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:2]]
    open_batch_rows(world.env, "dead-run", ids)
    closed = close_batch_rows(world.env.db, "dead-run", ids, succeeded=False, error="run failed")
    assert closed == 2
    assert set(failure_streaks(world.env.db)) == set(ids)
    assert close_batch_rows(world.env.db, "dead-run", ids, succeeded=False, error="again") == 0


def test_a_type_the_server_keeps_failing_does_not_stop_the_members_other_types(start_sandbox, world, http):
    """As in a member's own run, where each type is its own step: Encounter answered 500 on every request fails
    that type (its mark held, the member retried), while the types after it still sync and move their marks. A
    member stopped at its first failing type would never sync the types after it while the fault lasts."""
    sb = start_sandbox(patients=2)
    ids = [connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:2]]
    add_fault(http, sb, "500", path="/fhir/Encounter", times=None)
    with DagsterInstance.ephemeral() as instance:
        result = _batch(world, ids, instance)
        assert not result.success
        for cid in ids:
            row = runs.get(world.env.db, result.sync_run_ids[cid])
            assert row is not None and row.status == "failed" and "Encounter" in (row.error or ""), row
            assert cursors.get_mark(world.env.db, cid, cursors.REST_STREAM, "Encounter") is None
            for later in ("Observation", "Condition", "DocumentReference"):
                assert cursors.get_mark(world.env.db, cid, cursors.REST_STREAM, later) is not None, (cid, later)
            assert row.counts["Observation"]["created"] > 0
        assert instance.get_materialized_partitions(warehouse_key("Observation")) == set(ids)
        assert not instance.get_materialized_partitions(warehouse_key("Encounter"))
        assert set(failure_streaks(world.env.db)) == set(ids)


def test_a_throttle_longer_than_ehrsync_waits_stops_the_member(start_sandbox, world, http):
    """BDX-10: a 429 whose Retry-After (50 min) is past the longest ehrsync waits says every request is refused
    until then. The member stops there (row failed, retried with backoff) instead of sending each later type's
    searches to a server that said it will refuse them; the same holds for a spent quota (eCW's per-practice
    budget), which is a RateLimitedError too. Here the throttle answers once: a member that went on would sync
    the types after Encounter and move their marks."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    add_fault(http, sb, "429", path="/fhir/Encounter", retry_after="3000", times=1)
    outcome = sync_connection(world.env, cid, "throttled-batch")
    assert outcome.error is not None and "RateLimitedError" in outcome.error, outcome.error
    assert cursors.get_mark(world.env.db, cid, cursors.REST_STREAM, "Patient") is not None
    for later in ("Encounter", "Observation", "Condition", "DocumentReference"):
        assert cursors.get_mark(world.env.db, cid, cursors.REST_STREAM, later) is None, later
    row = runs.get(world.env.db, outcome.sync_run_id)
    assert row is not None and row.status == "failed"


def test_another_process_refreshing_the_grant_past_the_lock_timeout_stops_the_member(
    start_sandbox, world, http, monkeypatch
):
    """Another process has held the grant's refresh lock past its 300 s (``RefreshLockTimeoutError``): each later
    type would wait those 300 s again, holding the connection's lock, so the member stops at the type that met it
    (row failed, retried with backoff), as for a refused grant."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    tried: list[str] = []
    land = batch_sync.land_resource_type

    def waited_out(env, connection_id, resource_type, run_id):
        tried.append(resource_type)
        if resource_type == "Encounter":
            raise RefreshLockTimeoutError(f"connection {connection_id}: another process has been refreshing ...")
        return land(env, connection_id, resource_type, run_id)

    monkeypatch.setattr(batch_sync, "land_resource_type", waited_out)
    outcome = sync_connection(world.env, cid, "refresh-lock-batch")
    assert outcome.error is not None and "RefreshLockTimeoutError" in outcome.error, outcome.error
    assert tried[-1] == "Encounter", tried
    row = runs.get(world.env.db, outcome.sync_run_id)
    assert row is not None and row.status == "failed"


def _fhir_requests(request_log) -> int:
    return sum(1 for url in request_log.urls if url.path.startswith("/fhir"))


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "429", "retry_after": "3000", "times": None},  # a throttle past the 15 min ehrsync waits
        {"kind": "quota", "quota": 2, "window_s": 86400, "quota_headers": "draft"},  # a daily quota spent
    ],
    ids=["retry_after", "quota"],
)
def test_a_source_wide_throttle_defers_the_batch_members_after_it(start_sandbox, world, http, request_log, fault):
    """BDX-10, vendors.md §4: once a member stops on a throttle of its source (a 429 whose Retry-After is past what
    ehrsync waits, the EHR's quota spent), the later members at that source are not tried: no request, no failure,
    cursors untouched; each row is ``deferred`` until the time the source named, and the scheduler asks for them
    again then (not before, not as failures). Before: every member sent its refused request and failed."""
    sb = start_sandbox(patients=3)
    ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3])
    first, rest = ids[0], ids[1:]
    add_fault(http, sb, path="/fhir", **fault)
    result, stopped, before = batch_after_first(world, ids, request_log)
    db = world.env.db
    assert stopped.not_before is not None, stopped
    assert stopped.not_before > before + timedelta(minutes=45)  # the source's own time, not the retry backoff
    for cid in rest:
        row = runs.get(db, result.sync_run_ids[cid])
        assert row is not None and row.status == "deferred", row
        assert row.not_before == stopped.not_before and "throttled" in (row.error or ""), row
        assert row.started_at is None and row.counts == {}
        assert all(cursors.get_mark(db, cid, cursors.REST_STREAM, t) is None for t in ("Patient", "Observation"))
    if fault["kind"] == "429":
        assert _fhir_requests(request_log) == 1, "only the first member's refused request reaches the EHR"
    assert set(failure_streaks(db)) == {first}  # the deferred ones start no failure streak

    sets, conns = PartitionSets(patient=frozenset(ids)), read_connections(db)

    def due_at(now: datetime) -> dict[str, str]:
        due, _ = plan_due_runs(
            now, conns, partitions=sets, busy=set(), windows={}, failures=failure_streaks(db), holds=source_holds(db)
        )
        return {d.connection.id: d.run_key for d in due}

    assert due_at(datetime.now(UTC)) == {}  # nobody before the source's time, the failed member neither
    later = due_at(stopped.not_before + timedelta(seconds=1))
    assert set(later) == set(ids)  # then every one: the deferred ones not forgotten
    assert all(later[cid].startswith("deferred:") for cid in rest), later  # its own run key: the batch's is spent
    assert not later[first].startswith("deferred:"), later  # a failure: its retry (or by then its next slot)


def test_a_throttle_defers_only_its_own_source(start_sandbox, world, http):
    """A member at another FHIR base (another practice's server, another source) is still synced after one
    source's throttle; only the members at the throttled base wait."""
    sb = start_sandbox(patients=3)
    ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3])
    real_base = _set_base(world, ids[2], "http://127.0.0.1:1/fhir")
    _set_base(world, ids[2], real_base.replace("127.0.0.1", "localhost"))
    add_fault(http, sb, "429", path="/fhir", retry_after="3000", times=1)
    with DagsterInstance.ephemeral() as instance:
        result = _batch(world, ids, instance)
    statuses = [runs.get(world.env.db, result.sync_run_ids[cid]).status for cid in ids]  # type: ignore[union-attr]
    assert statuses == ["failed", "deferred", "completed"], statuses
