"""The ``connections`` partitions follow the app database: no one has to touch Dagster.

A patient who authorizes appears as a new active connection: the sensor adds its partition and, in the
same evaluation, requests its first full sync. A connection that is disconnected (or deleted) loses its
partition; its queued runs are cancelled and running ones asked to stop (disabled ones too).
"""

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    Definitions,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from engine.connection_snapshots import ConnectionSnapshot, read_connections
from engine.planning import ConnectionsCursor, first_sync_run_key, plan_partitions
from engine.run_tags import run_tags
from pipelines.defs._shared.partitions import CONNECTIONS_PARTITIONS_NAME
from pipelines.defs._shared.run_control import stop_connection_runs
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB, bulk_export_job
from pipelines.defs.sync.jobs import FULL_RESYNC_JOB, full_resync_job
from pipelines.resources import AppDatabaseResource

__all__ = ["connections_sensor", "defs", "first_sync_request"]


def first_sync_request(conn: ConnectionSnapshot) -> RunRequest:
    """A first sync: everything by REST for a patient, a Bulk export for backend and group connections."""
    return RunRequest(
        run_key=first_sync_run_key(conn),
        job_name=BULK_EXPORT_JOB if conn.is_bulk else FULL_RESYNC_JOB,
        partition_key=conn.id,
        tags=run_tags(connection_id=conn.id, tenant_id=conn.tenant_id, source=conn.provider_id, trigger="first-sync"),
    )


@sensor(
    name="connections_sensor",
    minimum_interval_seconds=30,
    jobs=[full_resync_job, bulk_export_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds/removes `connections` partitions from the app database; first sync for new connections.",
)
def connections_sensor(context: SensorEvaluationContext, app_db: AppDatabaseResource) -> SensorResult:
    with app_db.open() as db:
        connections = read_connections(db)
    existing = set(context.instance.get_dynamic_partitions(CONNECTIONS_PARTITIONS_NAME))
    plan = plan_partitions(connections, existing, ConnectionsCursor.parse(context.cursor))
    stopped = sum(stop_connection_runs(context.instance, cid) for cid in plan.stop_runs_of)
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if plan.add:
        requests.append(AddDynamicPartitionsRequest(CONNECTIONS_PARTITIONS_NAME, list(plan.add)))
    if plan.remove:
        requests.append(DeleteDynamicPartitionsRequest(CONNECTIONS_PARTITIONS_NAME, list(plan.remove)))
    context.log.info(
        "connections: %d known, %d partitions added, %d removed, %d first syncs, %d runs stopped",
        len(connections),
        len(plan.add),
        len(plan.remove),
        len(plan.first_syncs),
        stopped,
    )
    return SensorResult(
        run_requests=[first_sync_request(c) for c in plan.first_syncs],
        dynamic_partitions_requests=requests,
        cursor=plan.cursor.serialize(),
    )


defs = Definitions(sensors=[connections_sensor])
