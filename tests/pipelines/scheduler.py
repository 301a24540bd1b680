"""One tick of the ``scheduled_syncs`` sensor against a test app database, with the resources it reads."""

from __future__ import annotations

from dagster import DagsterInstance, SensorResult, build_sensor_context

from pipelines.defs.scheduling.sensors import scheduled_syncs_sensor
from pipelines.resources import AppDatabaseResource, RetryPolicyResource, SyncPolicyResource
from tests.pipelines.appdb import AppDb


def evaluate_scheduled_syncs(
    instance: DagsterInstance, app_db: AppDb, *, windows: str = "", retry: RetryPolicyResource | None = None
) -> SensorResult:
    """The sensor's result (asserted to be a ``SensorResult``): default policy unless ``windows``/``retry``."""
    context = build_sensor_context(
        instance=instance,
        resources={
            "app_db": AppDatabaseResource(url=app_db.url),
            "policy": SyncPolicyResource(sync_windows=windows),
            "retry": retry or RetryPolicyResource(),
        },
    )
    result = scheduled_syncs_sensor(context)
    assert isinstance(result, SensorResult)
    return result
