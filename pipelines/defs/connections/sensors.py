"""The connection partitions follow the app database: no one has to touch Dagster.

A patient who authorizes appears as a new active connection: the sensor adds its key to
``patient_connections`` (``bulk_connections`` for backend/group) and, in the same evaluation, requests its first
full sync. A patient's new authorization that took over a connection synced before asks for its incremental sync
at once (its marks kept: only what changed meanwhile). A connection that is disconnected (or deleted) loses its
partition; its queued runs are cancelled and running ones asked to stop (disabled ones too). Keys left in the
single ``connections`` set of before issue 12 (or in the wrong set) are moved to their own set, without a first
sync: their history stays, keyed by the same connection id.
"""

from dataclasses import replace
from datetime import UTC, datetime

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from engine.connection_snapshots import ConnectionSnapshot, read_connections
from engine.planning import (
    ConnectionsCursor,
    PartitionPlan,
    PartitionSets,
    first_sync_run_key,
    plan_partitions,
    reauthorized_run_key,
)
from engine.retries import failure_streaks, streak_horizon
from engine.run_tags import connection_run_tags
from engine.scheduling import RetryBackoff
from pipelines.defs._shared.partitions import (
    BULK_CONNECTIONS_PARTITIONS_NAME,
    LEGACY_CONNECTIONS_PARTITIONS_NAME,
    PATIENT_CONNECTIONS_PARTITIONS_NAME,
    partition_sets,
)
from pipelines.defs._shared.run_control import busy_among, stop_connection_runs
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB, bulk_export_job
from pipelines.defs.sync.batch import busy_in_batches
from pipelines.defs.sync.jobs import FULL_RESYNC_JOB, INCREMENTAL_SYNC_JOB, full_resync_job, incremental_sync_job
from pipelines.resources import AppDatabaseResource, RetryPolicyResource
from store import AppDatabase

__all__ = [
    "connections_sensor",
    "defs",
    "first_sync_request",
    "partition_requests",
    "resume_request",
    "without_held_first_syncs",
]

PartitionRequest = AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest


def first_sync_request(conn: ConnectionSnapshot) -> RunRequest:
    """A first sync: everything by REST for a patient, a Bulk export for backend and group connections."""
    return RunRequest(
        run_key=first_sync_run_key(conn),
        job_name=BULK_EXPORT_JOB if conn.is_bulk else FULL_RESYNC_JOB,
        partition_key=conn.id,
        tags=connection_run_tags(conn, "first-sync"),
    )


def resume_request(conn: ConnectionSnapshot) -> RunRequest:
    """The incremental sync of a re-authorized patient connection: from its kept marks, not its whole record."""
    return RunRequest(
        run_key=reauthorized_run_key(conn),
        job_name=INCREMENTAL_SYNC_JOB,
        partition_key=conn.id,
        tags=connection_run_tags(conn, "reauthorized"),
    )


def partition_requests(plan: PartitionPlan) -> list[PartitionRequest]:
    """Adds before deletes: a key moving between sets is never in none of them (the next tick re-plans)."""
    requests: list[PartitionRequest] = []
    for name, keys in (
        (PATIENT_CONNECTIONS_PARTITIONS_NAME, plan.add_patient),
        (BULK_CONNECTIONS_PARTITIONS_NAME, plan.add_bulk),
    ):
        if keys:
            requests.append(AddDynamicPartitionsRequest(name, list(keys)))
    for name, keys in (
        (PATIENT_CONNECTIONS_PARTITIONS_NAME, plan.remove_patient),
        (BULK_CONNECTIONS_PARTITIONS_NAME, plan.remove_bulk),
        (LEGACY_CONNECTIONS_PARTITIONS_NAME, plan.remove_legacy),
    ):
        if keys:
            requests.append(DeleteDynamicPartitionsRequest(name, list(keys)))
    return requests


def without_held_first_syncs(
    instance: DagsterInstance, db: AppDatabase, plan: PartitionPlan, sets: PartitionSets, backoff: RetryBackoff
) -> PartitionPlan:
    """The plan less the first syncs asked again for a known connection (its row changed: a token refresh moves
    ``updated_at`` too) that has a run queued or in progress (its own, or a batch run it is a member of), or failed
    runs the scheduler retries with backoff: a second full resync of its whole history would follow the first, or
    bypass the backoff. Failures are read as far back as the scheduler reads them under the operator's ``backoff``
    (``streak_horizon``). Likewise the incremental syncs of re-authorized connections (``resumes``) that have a run
    queued or in progress (that run uses the new grant); their failures are the refused grant's, no reason to wait."""
    again = {c.id for c in plan.first_syncs if c.id in sets.known}
    resuming = {c.id for c in plan.resumes}  # a failure streak does not hold these: it was the refused grant's
    if not again and not resuming:
        return plan
    asked = again | resuming  # one lookup of runs in flight and of batches for both
    busy = busy_among(instance, asked) | (asked & busy_in_batches(instance, db))
    streaks = failure_streaks(db, since=datetime.now(UTC) - streak_horizon(backoff)) if again else {}
    held = (again & busy) | (again & set(streaks))
    return replace(
        plan,
        first_syncs=tuple(c for c in plan.first_syncs if c.id not in held),
        resumes=tuple(c for c in plan.resumes if c.id not in busy),
    )


@sensor(
    name="connections_sensor",
    minimum_interval_seconds=30,
    jobs=[full_resync_job, bulk_export_job, incremental_sync_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds/removes `patient_connections` and `bulk_connections` partitions from the app database "
    "(moving keys of the old `connections` set); first sync for new connections, an incremental sync for "
    "re-authorized ones.",
)
def connections_sensor(
    context: SensorEvaluationContext, app_db: AppDatabaseResource, retry: RetryPolicyResource
) -> SensorResult:
    sets = partition_sets(context.instance)
    with app_db.open() as db:
        connections = read_connections(db)
        plan = plan_partitions(connections, sets, ConnectionsCursor.parse(context.cursor))
        plan = without_held_first_syncs(context.instance, db, plan, sets, retry.backoff())
    stopped = sum(stop_connection_runs(context.instance, cid) for cid in plan.stop_runs_of)
    context.log.info(
        "connections: %d known, %d partitions added, %d removed, %d moved from the old set, %d first syncs, "
        "%d re-authorized syncs, %d runs stopped",
        len(connections),
        len(plan.add) - len(plan.migrated),
        len(plan.departed),
        len(plan.migrated),
        len(plan.first_syncs),
        len(plan.resumes),
        stopped,
    )
    return SensorResult(
        run_requests=[first_sync_request(c) for c in plan.first_syncs] + [resume_request(c) for c in plan.resumes],
        dynamic_partitions_requests=partition_requests(plan),
        cursor=plan.cursor.serialize(),
    )


defs = Definitions(sensors=[connections_sensor])
