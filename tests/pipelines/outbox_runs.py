"""The note outbox sensor's tick and the write-back run it asks for, as the write-back pipeline tests drive them:
the real sensor and the real job in-process, with the service write flag on and no backoff."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, RunRequest, SensorResult, build_sensor_context

from pipelines.defs.writeback.jobs import write_back_note
from pipelines.defs.writeback.resources import WritebackResource
from pipelines.defs.writeback.sensors import note_outbox_sensor
from tests.engine.job_runs import world_resources

ON = WritebackResource(service_write_enabled=True, backoff_base_s=0.0, backoff_cap_s=0.0)


def tick_outbox(instance: DagsterInstance, world: Any, cursor: str | None = None) -> SensorResult:
    """One evaluation of ``note_outbox_sensor`` over the world's app database."""
    resources = {"app_db": world_resources(world)["app_db"], "writeback": ON}
    result = note_outbox_sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    assert isinstance(result, SensorResult)
    return result


def run_requested(world: Any, instance: DagsterInstance, request: RunRequest) -> ExecuteInProcessResult:
    """The run the sensor asked for: the real job, in-process, as the run launcher would start it."""
    return write_back_note.execute_in_process(
        run_config=request.run_config,
        resources={**world_resources(world), "writeback": ON},
        instance=instance,
        tags=request.tags,
    )
