"""weekly_reconcile_deletes (BDX-31): one run a week per active patient connection that has a partition, at the
connection's own hour of the week, so the week's runs are spread over its 168 hours."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, RunRequest

from engine.run_tags import CONNECTION_TAG, TRIGGER_TAG
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.maintenance.jobs import HOURS_A_WEEK, reconcile_hour
from tests.pipelines.appdb import AppDb
from tests.pipelines.scheduler import weekly_reconcile_ticks


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
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    by_tick = {}
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, monday):  # every hourly tick
        assert isinstance(requests, list) and all(isinstance(r, RunRequest) for r in requests)
        if requests:
            by_tick[hour] = requests
    hour = reconcile_hour(patient)
    assert list(by_tick) == [hour]  # once a week, at the connection's own hour; the others never
    [request] = by_tick[hour]
    day = f"{monday + timedelta(hours=hour):%Y%m%d}"
    assert (request.partition_key, request.run_key) == (patient, f"reconcile:patient:{day}")
    assert request.tags[CONNECTION_TAG] == patient
    assert request.tags[TRIGGER_TAG] == "reconcile"


def test_ten_thousand_connections_are_spread_over_the_week() -> None:
    """No hour holds more than twice its share (10,000 / 168 = 60 on average), so a tick never queues enough
    reconciliations to hold back the scheduled syncs for long."""
    per_hour = Counter(reconcile_hour(f"conn-{i:05d}") for i in range(10_000))
    assert len(per_hour) == HOURS_A_WEEK and max(per_hour.values()) <= 2 * 10_000 / HOURS_A_WEEK
