"""Many patient connections of one source in one Dagster run (``incremental_sync_batch``), each isolated.

Through the real job in-process (``run_batch_now``, the job the scheduling sensor requests) against the sandbox:
a member that fails records its own failure and is retried alone; the others complete, move their cursors and
``last_sync_at``, and their per-type assets show the partition materialized.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from dagster import DagsterInstance

from ehrsync.run_now import BatchNowResult, run_batch_now
from engine import cursors, runs
from engine.batch_sync import close_batch_rows, open_batch_rows, sync_connection
from engine.retries import failure_streaks
from pipelines.defs.sync.type_assets import landing_key, warehouse_key
from store.models import Connection
from tests.engine.helpers import add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import world_resources, world_settings


def _batch(world, ids: list[str], instance: DagsterInstance) -> BatchNowResult:
    settings = world_settings(world)
    return run_batch_now(ids, "generic", settings=settings, instance=instance, resources=world_resources(world))


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
