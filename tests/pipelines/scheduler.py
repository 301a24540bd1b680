"""One tick of the ``scheduled_syncs`` sensor against a test app database, with the resources it reads."""

from __future__ import annotations

from dagster import DagsterInstance, SensorResult, build_sensor_context

from pipelines.defs.scheduling.sensors import scheduled_syncs_sensor
from pipelines.resources import AppDatabaseResource, RetryPolicyResource, SyncPolicyResource
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
