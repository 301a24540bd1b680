"""scheduled_syncs against a real app database: frequency, partitions, busy connections, windows, run keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from dagster import DagsterInstance

from engine.run_tags import TRIGGER_TAG
from pipelines.defs._shared.partitions import BULK_CONNECTIONS_PARTITIONS_NAME, PATIENT_CONNECTIONS_PARTITIONS_NAME
from tests.pipelines.appdb import AppDb, queued_run
from tests.pipelines.scheduler import evaluate_scheduled_syncs


def test_due_connections_get_one_run_each(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    now = datetime.now(UTC)
    due = app_db.add("due", last_sync=now - timedelta(hours=30))
    hourly = app_db.add("hourly", last_sync=now - timedelta(hours=2), freq=1)
    bulk = app_db.add("bulk", kind="backend", last_sync=now - timedelta(days=3))
    app_db.add("fresh", last_sync=now - timedelta(hours=1))
    app_db.add("weekly", last_sync=now - timedelta(days=3), freq=168)
    app_db.add("no-partition", last_sync=now - timedelta(days=3))
    app_db.add("reauth", status="needs_reauth", last_sync=now - timedelta(days=3))
    app_db.add("bulk-misfiled", kind="group", last_sync=now - timedelta(days=3))  # in the patient set: not run
    dagster_instance.add_dynamic_partitions(
        PATIENT_CONNECTIONS_PARTITIONS_NAME, ["due", "hourly", "fresh", "weekly", "reauth", "bulk-misfiled"]
    )
    dagster_instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, ["bulk"])

    result = evaluate_scheduled_syncs(dagster_instance, app_db)

    requests = {r.partition_key: r for r in result.run_requests or []}
    assert set(requests) == {due, hourly, bulk}
    assert requests[due].job_name == "incremental_sync"
    assert requests[bulk].job_name == "bulk_export"
    assert requests[due].tags[TRIGGER_TAG] == "schedule"
    assert (requests[due].run_key or "").startswith("scheduled:due:")
    cursor = orjson.loads(result.cursor or "{}")
    assert cursor["requested"] == 3

    # A second tick in the same slot asks for the same run keys (Dagster drops the duplicates).
    again = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert {r.run_key for r in again.run_requests or []} == {r.run_key for r in requests.values()}


def test_connection_with_a_queued_run_is_left_alone(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    cid = app_db.add("c1", last_sync=datetime.now(UTC) - timedelta(days=2))
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid])
    queued_run(dagster_instance, cid)
    assert not evaluate_scheduled_syncs(dagster_instance, app_db).run_requests


def test_source_window_is_respected(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    hour = datetime.now(UTC).hour
    closed = f'{{"epic": "{(hour + 3) % 24:02d}:00-{(hour + 4) % 24:02d}:00"}}'
    open_now = f'{{"epic": "{hour:02d}:00-{(hour + 2) % 24:02d}:00"}}'
    cid = app_db.add("c1", provider="epic", last_sync=datetime.now(UTC) - timedelta(days=2))
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid])
    assert not evaluate_scheduled_syncs(dagster_instance, app_db, windows=closed).run_requests
    opened = evaluate_scheduled_syncs(dagster_instance, app_db, windows=open_now)
    assert [r.partition_key for r in opened.run_requests or []] == [cid]
