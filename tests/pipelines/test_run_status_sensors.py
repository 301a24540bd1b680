"""The run-status sensors close sync_runs rows when a Dagster run ends (daemon path of finish_sync_run)."""

from __future__ import annotations

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    build_run_status_sensor_context,
)
from dagster._core.test_utils import create_run_for_test

from pipelines.defs.sync import sync_run_ended
from pipelines.resources import AppDatabaseResource
from pipelines.sync import runs
from pipelines.tags import CONNECTION_TAG
from tests.pipelines.appdb import AppDb

SENSORS = {s.name: s for s in sync_run_ended}


@pytest.mark.parametrize(
    ("sensor", "run_status", "event_type", "sync_status", "stamped"),
    [
        ("sync_run_success", DagsterRunStatus.SUCCESS, DagsterEventType.RUN_SUCCESS, "completed", True),
        ("sync_run_failure", DagsterRunStatus.FAILURE, DagsterEventType.RUN_FAILURE, "failed", False),
        ("sync_run_canceled", DagsterRunStatus.CANCELED, DagsterEventType.RUN_CANCELED, "failed", False),
    ],
)
def test_run_end_closes_the_sync_run(
    app_db: AppDb,
    dagster_instance: DagsterInstance,
    sensor: str,
    run_status: DagsterRunStatus,
    event_type: DagsterEventType,
    sync_status: str,
    stamped: bool,
) -> None:
    cid = app_db.add("c1")
    run = create_run_for_test(
        dagster_instance, job_name="incremental_sync", status=run_status, tags={CONNECTION_TAG: cid}
    )
    runs.ensure_run(app_db.db, cid, run.run_id, "incremental", tenant_id=app_db.tenant_id)
    context = build_run_status_sensor_context(
        sensor_name=sensor,
        dagster_event=DagsterEvent(
            event_type_value=event_type.value,
            job_name="incremental_sync",
            message="Steps failed: ['landing__Patient'].",
        ),
        dagster_instance=dagster_instance,
        dagster_run=run,
        resources={"app_db": AppDatabaseResource(url=app_db.url)},
    )

    SENSORS[sensor](context)

    record = runs.get(app_db.db, run.run_id)
    assert record is not None and record.status == sync_status
    assert (app_db.last_sync_at(cid) is not None) is stamped
    assert (record.error == "Steps failed: ['landing__Patient'].") is (not stamped)
