"""weekly_reconcile_deletes (BDX-31): one run per active patient connection that has a partition."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import DagsterInstance, RunRequest, build_schedule_context

from engine.run_tags import CONNECTION_TAG, TRIGGER_TAG
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.maintenance.jobs import weekly_reconcile_schedule
from pipelines.resources import AppDatabaseResource
from tests.pipelines.appdb import AppDb


def test_weekly_reconcile_requests_active_patient_partitions_only(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    patient = app_db.add("patient")
    app_db.add("backend", kind="backend")  # Bulk: deletions come from the export's deleted files
    app_db.add("disabled", status="disabled")
    app_db.add("unpartitioned")
    dagster_instance_on_disk.add_dynamic_partitions(
        PATIENT_CONNECTIONS_PARTITIONS_NAME, ["patient", "backend", "disabled"]
    )
    tick = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    with build_schedule_context(
        instance=dagster_instance_on_disk,
        scheduled_execution_time=tick,
        resources={"app_db": AppDatabaseResource(url=app_db.url)},
    ) as context:
        requests = weekly_reconcile_schedule(context)

    assert isinstance(requests, list)
    assert all(isinstance(r, RunRequest) for r in requests)
    assert [(r.partition_key, r.run_key) for r in requests] == [(patient, "reconcile:patient:20261129")]
    assert requests[0].tags[CONNECTION_TAG] == patient
    assert requests[0].tags[TRIGGER_TAG] == "reconcile"
