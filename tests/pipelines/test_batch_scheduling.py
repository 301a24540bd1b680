"""scheduled_syncs with batches: one run per EHR source and batch of due patient connections (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
)
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test

from engine import runs
from engine.batch_plan import plan_batches
from engine.batch_sync import batch_sync_run_id
from engine.planning import DueRun
from engine.run_outcome import finish_sync_run
from engine.run_tags import SOURCE_TAG
from pipelines.defs._shared.partitions import BULK_CONNECTIONS_PARTITIONS_NAME, PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs._shared.run_control import RESUME_RETRY_TAG
from pipelines.defs.sync.batch import BATCH_SYNC_JOB, BATCH_TAG, batch_connection_ids, batch_run_config
from tests.pipelines.appdb import AppDb
from tests.pipelines.scheduler import evaluate_scheduled_syncs
from tests.pipelines.test_run_status_sensors import report_failure

_ORIGIN = RemoteJobOrigin(  # a queued run needs one
    repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ehrsync"), "__repository__"),
    job_name=BATCH_SYNC_JOB,
)


def _due(app_db: AppDb, instance: DagsterInstance, cid: str, provider: str, kind: str = "patient") -> str:
    app_db.add(cid, provider=provider, kind=kind, last_sync=datetime.now(UTC) - timedelta(days=2))
    name = PATIENT_CONNECTIONS_PARTITIONS_NAME if kind == "patient" else BULK_CONNECTIONS_PARTITIONS_NAME
    instance.add_dynamic_partitions(name, [cid])
    return cid


def test_due_patients_of_one_source_share_runs_of_at_most_n(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    epic = [_due(app_db, dagster_instance, f"epic-{n}", "epic") for n in range(5)]
    lone = _due(app_db, dagster_instance, "cerner-0", "cerner")
    bulk = _due(app_db, dagster_instance, "bulk-0", "epic", kind="backend")

    result = evaluate_scheduled_syncs(dagster_instance, app_db, batch_size=2)

    requests = result.run_requests or []
    alone = {r.partition_key for r in requests if r.job_name != BATCH_SYNC_JOB}
    assert alone == {lone, bulk, epic[4]}  # a batch of one runs as the connection's own partitioned run
    batches = [r for r in requests if r.job_name == BATCH_SYNC_JOB]
    members = [r.run_config["ops"]["sync_connection_batch"]["config"]["connection_ids"] for r in batches]
    assert sorted(members) == [epic[0:2], epic[2:4]]
    assert all(r.tags[SOURCE_TAG] == "epic" and r.tags[BATCH_TAG] == "2" and r.partition_key is None for r in batches)
    assert len({r.run_key for r in batches}) == 2

    again = evaluate_scheduled_syncs(dagster_instance, app_db, batch_size=2)  # same due slots: same run keys
    assert sorted(r.run_key for r in again.run_requests or []) == sorted(r.run_key for r in requests)


def test_members_of_a_queued_batch_are_busy(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    ids = [_due(app_db, dagster_instance, f"epic-{n}", "epic") for n in range(3)]
    run = create_run_for_test(
        dagster_instance,
        job_name=BATCH_SYNC_JOB,
        status=DagsterRunStatus.QUEUED,
        run_config=batch_run_config(ids[:2]),
        tags={SOURCE_TAG: "epic", BATCH_TAG: "2"},
        remote_job_origin=_ORIGIN,
    )
    assert batch_connection_ids(run) == ids[:2]
    result = evaluate_scheduled_syncs(dagster_instance, app_db, batch_size=10)
    assert [r.partition_key for r in result.run_requests or []] == [ids[2]]


def test_a_queued_reexecution_from_failure_holds_only_the_members_it_will_sync(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """A "Re-execute from failure" of a batch passes over the members its parent completed; queued (its source's
    run limit, a backlog), it held them busy too: their scheduled syncs waited for as long as it did, then queued
    behind everything requested meanwhile. Only the member it will sync is busy now."""
    done, retried = (_due(app_db, dagster_instance, f"epic-{n}", "epic") for n in range(2))
    config = batch_run_config([done, retried])
    parent = create_run_for_test(
        dagster_instance, job_name=BATCH_SYNC_JOB, status=DagsterRunStatus.FAILURE, run_config=config
    )
    for cid, completed in ((done, True), (retried, False)):
        row = batch_sync_run_id(parent.run_id, cid)
        runs.ensure_run(app_db.db, cid, row, "incremental", tenant_id=app_db.tenant_id)
        if completed:
            runs.complete(app_db.db, row)
        else:
            runs.fail(app_db.db, row, "x")
    create_run_for_test(
        dagster_instance,
        job_name=BATCH_SYNC_JOB,
        status=DagsterRunStatus.QUEUED,
        run_config=config,
        tags={SOURCE_TAG: "epic", BATCH_TAG: "2", RESUME_RETRY_TAG: "true"},
        parent_run_id=parent.run_id,
        root_run_id=parent.run_id,
        remote_job_origin=_ORIGIN,
    )
    result = evaluate_scheduled_syncs(dagster_instance, app_db, batch_size=10)
    assert [r.partition_key for r in result.run_requests or []] == [done]


def test_plan_batches_rejects_a_size_below_one() -> None:
    due: list[DueRun] = []
    assert plan_batches(due, 1) == ([], [])
    with pytest.raises(ValueError, match="at least 1"):
        plan_batches(due, 0)


def test_a_failed_batch_run_closes_only_its_members_left_open(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    """The run-status sensor on a batch run: a member the run completed keeps its outcome; one left open (the
    run died) is failed, so it is retried alone; nothing is stamped for it."""
    done, open_ = app_db.add("done"), app_db.add("open")
    run = create_run_for_test(
        dagster_instance,
        job_name=BATCH_SYNC_JOB,
        status=DagsterRunStatus.FAILURE,
        run_config=batch_run_config([done, open_]),
        tags={SOURCE_TAG: "epic", BATCH_TAG: "2"},
    )
    for cid in (done, open_):
        runs.ensure_run(app_db.db, cid, batch_sync_run_id(run.run_id, cid), "incremental", tenant_id=app_db.tenant_id)
    finish_sync_run(app_db.db, batch_sync_run_id(run.run_id, done), done, succeeded=True)
    report_failure(app_db, dagster_instance, run)
    assert runs.get(app_db.db, batch_sync_run_id(run.run_id, done)).status == "completed"  # type: ignore[union-attr]
    assert runs.get(app_db.db, batch_sync_run_id(run.run_id, open_)).status == "failed"  # type: ignore[union-attr]
    assert app_db.last_sync_at(done) is not None and app_db.last_sync_at(open_) is None
