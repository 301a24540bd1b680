"""connections_sensor against a real app database: partitions follow connections, first syncs, stopped runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DagsterRunStatus,
    DeleteDynamicPartitionsRequest,
    SensorResult,
    build_sensor_context,
)
from dagster._core.test_utils import create_run_for_test

from engine import runs
from engine.models import SyncRun
from engine.planning import ConnectionsCursor
from engine.run_outcome import CANCELED_PREFIX
from engine.run_tags import CONNECTION_TAG, SOURCE_TAG, TENANT_TAG, TRIGGER_TAG
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.connections.sensors import connections_sensor
from pipelines.defs.sync.batch import BATCH_SYNC_JOB, BATCH_TAG, batch_run_config
from pipelines.resources import AppDatabaseResource, RetryPolicyResource
from store.models import Connection
from tests.pipelines.appdb import AppDb, make_app_db, queued_run


def evaluate(
    instance: DagsterInstance, url: str, cursor: str | None = None, retry: RetryPolicyResource | None = None
) -> SensorResult:
    resources = {"app_db": AppDatabaseResource(url=url), "retry": retry or RetryPolicyResource()}
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = connections_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def apply_partitions(instance: DagsterInstance, result: SensorResult) -> None:
    """What the daemon does with the sensor's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        elif isinstance(request, DeleteDynamicPartitionsRequest):
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def added(result: SensorResult) -> list[str]:
    return [
        k
        for r in result.dynamic_partitions_requests or []
        if isinstance(r, AddDynamicPartitionsRequest)
        for k in r.partition_keys
    ]


def removed(result: SensorResult) -> list[str]:
    return [
        k
        for r in result.dynamic_partitions_requests or []
        if isinstance(r, DeleteDynamicPartitionsRequest)
        for k in r.partition_keys
    ]


def check_authorize_adds_partition_and_first_sync(appdb: AppDb, instance: DagsterInstance) -> None:
    patient = appdb.add("patient-1", provider="epic")
    group = appdb.add("group-1", kind="group", provider="cerner")
    result = evaluate(instance, appdb.url)
    assert sorted(added(result)) == ["group-1", "patient-1"]
    requests = {r.partition_key: r for r in result.run_requests or []}
    assert set(requests) == {patient, group}
    assert requests[patient].job_name == "full_resync"
    assert requests[group].job_name == "bulk_export"
    assert (requests[patient].run_key or "").startswith("first-sync:patient-1:")
    assert requests[patient].tags[CONNECTION_TAG] == patient
    assert requests[patient].tags[TENANT_TAG] == appdb.tenant_id
    assert requests[patient].tags[SOURCE_TAG] == "epic"
    assert requests[patient].tags[TRIGGER_TAG] == "first-sync"
    assert result.cursor is not None
    assert ConnectionsCursor.parse(result.cursor).updated_hwm is not None

    # Next tick: the partitions exist, so nothing is added; rows inside the cursor's overlap are asked for again
    # with the same run keys, which Dagster drops as duplicates (planning tests cover the tick after it).
    apply_partitions(instance, result)
    again = evaluate(instance, appdb.url, result.cursor)
    assert added(again) == [] and removed(again) == []
    assert {r.run_key for r in again.run_requests or []} <= {r.run_key for r in result.run_requests or []}


def test_patient_who_authorizes_gets_a_partition_and_a_first_full_sync(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    check_authorize_adds_partition_and_first_sync(app_db, dagster_instance)


@pytest.mark.postgres
def test_same_on_a_postgres_app_database(postgres_url: str, dagster_instance: DagsterInstance) -> None:
    appdb = make_app_db(postgres_url)
    try:
        check_authorize_adds_partition_and_first_sync(appdb, dagster_instance)
    finally:
        appdb.db.dispose()


def test_disconnect_removes_partition_and_cancels_queued_runs(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    cid = app_db.add("c1", last_sync=datetime.now(UTC))
    other = app_db.add("c2", last_sync=datetime.now(UTC))
    first = evaluate(dagster_instance, app_db.url)
    apply_partitions(dagster_instance, first)
    queued = queued_run(dagster_instance, cid)
    untouched = queued_run(dagster_instance, other)

    app_db.set_status(cid, "disconnected")
    result = evaluate(dagster_instance, app_db.url, first.cursor)

    assert removed(result) == [cid]
    assert not result.run_requests
    canceled = dagster_instance.get_run_by_id(queued.run_id)
    kept = dagster_instance.get_run_by_id(untouched.run_id)
    assert canceled is not None and canceled.status == DagsterRunStatus.CANCELED
    assert kept is not None and kept.status == DagsterRunStatus.QUEUED
    apply_partitions(dagster_instance, result)
    assert dagster_instance.get_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME) == [other]


def test_needs_reauth_keeps_its_partition_without_new_runs(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    app_db.add("c1", status="needs_reauth")
    result = evaluate(dagster_instance, app_db.url)
    assert added(result) == ["c1"]
    assert not result.run_requests


def test_reauthorized_connection_gets_a_new_first_sync(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    """A connection whose first sync never completed and that is re-activated asks again (new run key)."""
    cid = app_db.add("c1")
    first = evaluate(dagster_instance, app_db.url)
    apply_partitions(dagster_instance, first)
    app_db.set_status(cid, "needs_reauth")
    middle = evaluate(dagster_instance, app_db.url, first.cursor)
    app_db.set_status(cid, "active")
    again = evaluate(dagster_instance, app_db.url, middle.cursor)
    keys = [r.run_key for r in [*(first.run_requests or []), *(again.run_requests or [])]]
    assert len(keys) == 2
    assert keys[0] != keys[1]


@pytest.mark.parametrize(
    ("instance_fixture", "expected"),
    [
        # The default launcher is asked to terminate the run.
        ("dagster_instance_on_disk", {DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED}),
        # The in-memory launcher cannot terminate: logged, and the sensor still finishes its work.
        ("dagster_instance", {DagsterRunStatus.STARTED}),
    ],
)
def test_running_sync_of_a_disabled_connection_is_asked_to_stop(
    app_db: AppDb, request: pytest.FixtureRequest, instance_fixture: str, expected: set[DagsterRunStatus]
) -> None:
    instance: DagsterInstance = request.getfixturevalue(instance_fixture)
    cid = app_db.add("c1", last_sync=datetime.now(UTC))
    first = evaluate(instance, app_db.url)
    apply_partitions(instance, first)
    running = create_run_for_test(
        instance, job_name="incremental_sync", status=DagsterRunStatus.STARTED, tags={CONNECTION_TAG: cid}
    )
    app_db.set_status(cid, "disabled")

    result = evaluate(instance, app_db.url, first.cursor)

    assert removed(result) == []  # a disabled connection keeps its partition (and history)
    assert result.cursor is not None
    after = instance.get_run_by_id(running.run_id)
    assert after is not None
    assert after.status in expected


def _token_refreshed(app_db: AppDb, cid: str) -> None:
    """What a token write does to the connection row (``store.tokenrows.write_tokens``): ``updated_at`` moves."""
    with app_db.db.session() as session:
        row = session.get(Connection, cid)
        assert row is not None
        row.updated_at = datetime.now(UTC)
        session.commit()


def test_a_token_refresh_before_the_first_sync_completes_asks_for_no_second_one(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """A long first sync refreshes its token (the row's ``updated_at`` moves): the sensor must not queue a second
    full resync of the whole history behind it; nor, once that first sync failed, one beside the scheduler's
    retries (with their backoff) at each refresh."""
    cid = app_db.add("c1")
    first = evaluate(dagster_instance, app_db.url)
    assert [r.job_name for r in first.run_requests or []] == ["full_resync"]
    apply_partitions(dagster_instance, first)
    running = create_run_for_test(
        dagster_instance, job_name="full_resync", status=DagsterRunStatus.STARTED, tags={CONNECTION_TAG: cid}
    )
    runs.ensure_run(app_db.db, cid, running.run_id, "full", tenant_id=app_db.tenant_id)
    _token_refreshed(app_db, cid)
    during = evaluate(dagster_instance, app_db.url, first.cursor)
    assert not during.run_requests  # its first sync is in progress

    dagster_instance.report_run_failed(running)
    runs.fail(app_db.db, running.run_id, "Observation: FhirServerError: 500")
    _token_refreshed(app_db, cid)
    after = evaluate(dagster_instance, app_db.url, during.cursor)
    assert not after.run_requests  # failed: the scheduler retries it with backoff (engine.retries)


def test_a_failed_first_sync_stays_held_as_long_as_the_operators_backoff_reaches(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """The hold reads failures as far back as the scheduler does under the configured backoff: with a cap of
    3 days, a first sync that failed 4 days ago is still the scheduler's to retry (its horizon is weeks), so a
    token refresh must not queue a new full resync beside it. Before, the hold used the default backoff's
    horizon (3 days) and asked for one."""
    cid = app_db.add("c1")
    first = evaluate(dagster_instance, app_db.url)
    apply_partitions(dagster_instance, first)
    failed = create_run_for_test(
        dagster_instance, job_name="full_resync", status=DagsterRunStatus.STARTED, tags={CONNECTION_TAG: cid}
    )
    runs.ensure_run(app_db.db, cid, failed.run_id, "full", tenant_id=app_db.tenant_id)
    dagster_instance.report_run_failed(failed)
    four_days_ago = datetime.now(UTC) - timedelta(days=4)
    runs.fail(app_db.db, failed.run_id, "Observation: FhirServerError: 500", finished_at=four_days_ago)
    with app_db.db.session() as session:  # the run was created before it failed
        session.get(SyncRun, failed.run_id).created_at = four_days_ago - timedelta(hours=1)
        session.commit()
    _token_refreshed(app_db, cid)
    cap = RetryPolicyResource(base_seconds=3600, cap_seconds=3 * 24 * 3600)
    held = evaluate(dagster_instance, app_db.url, first.cursor, retry=cap)
    assert not held.run_requests
    _token_refreshed(app_db, cid)
    default = evaluate(dagster_instance, app_db.url, first.cursor)
    assert [r.job_name for r in default.run_requests or []] == ["full_resync"]  # past the default's 3-day horizon


def test_a_token_refresh_during_a_batch_sync_of_a_never_synced_connection_asks_for_no_full_resync(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """A connection whose first sync was canceled (not retried) is synced by the scheduler a period later, in a
    batch run of its source. The batch refreshes its token (``updated_at`` moves) before ``last_sync_at`` is set:
    the member is busy in that batch (no connection tag: its id is in the run config), so no full resync of its
    whole history may be queued behind it."""
    cid, other = app_db.add("c1"), app_db.add("c2")
    first = evaluate(dagster_instance, app_db.url)
    apply_partitions(dagster_instance, first)
    canceled = create_run_for_test(
        dagster_instance, job_name="full_resync", status=DagsterRunStatus.CANCELED, tags={CONNECTION_TAG: cid}
    )
    runs.ensure_run(app_db.db, cid, canceled.run_id, "full", tenant_id=app_db.tenant_id)
    runs.fail(app_db.db, canceled.run_id, f"{CANCELED_PREFIX}run canceled")
    create_run_for_test(
        dagster_instance,
        job_name=BATCH_SYNC_JOB,
        status=DagsterRunStatus.STARTED,
        run_config=batch_run_config([cid, other]),
        tags={SOURCE_TAG: "epic", BATCH_TAG: "2"},
    )
    _token_refreshed(app_db, cid)
    during = evaluate(dagster_instance, app_db.url, first.cursor)
    assert [r for r in during.run_requests or [] if r.partition_key == cid] == []
