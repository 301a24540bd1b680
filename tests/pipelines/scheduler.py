"""Ticks of the ``scheduled_syncs`` sensor and of the weekly reconcile schedule against a test app database, with the
resources they read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, SensorResult, build_schedule_context, build_sensor_context

from pipelines.defs.maintenance.jobs import HOURS_A_WEEK, weekly_reconcile_schedule
from pipelines.defs.scheduling.sensors import scheduled_syncs_sensor
from pipelines.resources import AppDatabaseResource, LandingZoneResource, RetryPolicyResource, SyncPolicyResource
from tests.pipelines.appdb import AppDb


def evaluate_scheduled_syncs(
    instance: DagsterInstance,
    app_db: AppDb,
    *,
    windows: str = "",
    retry: RetryPolicyResource | None = None,
    batch_size: int = 1,
) -> SensorResult:
    """The sensor's result (asserted to be a ``SensorResult``): default policy unless ``windows``/``retry``.

    ``batch_size`` 1 (a run per connection) unless a test is about batch runs (``test_batch_scheduling``)."""
    context = build_sensor_context(
        instance=instance,
        resources={
            "app_db": AppDatabaseResource(url=app_db.url),
            "policy": SyncPolicyResource(sync_windows=windows, sync_batch_size=batch_size),
            "retry": retry or RetryPolicyResource(),
        },
    )
    result = scheduled_syncs_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def landing_root(app_db: AppDb) -> Path:
    """The landing zone ``weekly_reconcile_ticks`` hands the schedule: a folder beside the app database."""
    return Path(str(app_db.db.engine.url.database)).parent / "landing"


def weekly_reconcile_ticks(instance: DagsterInstance, app_db: AppDb, monday: datetime) -> Iterator[tuple[int, Any]]:
    """``(hour, what the schedule returned)`` for every hourly tick of the week from ``monday``.

    Each tick's context is handed the test's instance itself: Dagster's context would open a new one from its
    reference at every tick (as the daemon does), re-reading the Alembic scripts of its three storages each time,
    ~80 ms of a ~130 ms tick; the storage, and so what the schedule reads, is the same. The landing zone, whose
    lock files say which connections a run holds, is a folder beside the app database: no connection is busy."""
    root = landing_root(app_db)
    landing = LandingZoneResource(root=str(root), attachments_root=str(root.parent / "attachments"))
    for hour in range(HOURS_A_WEEK):
        with build_schedule_context(
            instance=instance,
            scheduled_execution_time=monday + timedelta(hours=hour),
            resources={"app_db": AppDatabaseResource(url=app_db.url), "landing": landing},
        ) as context:
            context._instance = instance  # type: ignore[assignment]  # Dagster's slot for the instance it opens
            yield hour, weekly_reconcile_schedule(context)
