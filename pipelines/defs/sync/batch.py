"""``incremental_sync_batch``: incremental syncs of many patient connections of one EHR source in one run.

A run's fixed cost (seconds) dwarfs an incremental sync with nothing changed (a third of a second), so the
scheduling sensor requests one run per source and batch (``EHRSYNC_SYNC_BATCH_SIZE``). One op syncs the members
one after another through ``engine.batch_sync`` (each isolated: its own ``sync_runs`` row, cursors and lock;
a failure stays its own). The per-type assets still tell the truth per partition: for each member and each type
its sync changed, the op logs ``AssetMaterialization`` events of ``landing/<Type>`` and ``warehouse/<Type>`` with
``partition=<connection id>``, and the asset checks its own run would evaluate (quarantine, duplicate keys) for
that partition; an unchanged type logs nothing, its last events still describe its data (``batch_checks``).
The run is tagged with its source (``ehrsync/source``), so the per-source run limit counts a batch as one run
toward that EHR, and ``ehrsync/batch``, by which the scheduler finds the connections batch runs hold.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import (
    Config,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    RunsFilter,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from engine import REFERENCED_TYPES, TypeReport
from engine.batch_sync import ConnectionOutcome, passed_over_earlier, sync_batch
from engine.run_tags import KIND_TAG, SOURCE_TAG, TRIGGER_TAG
from pipelines.defs._shared.connection_facts import connection_metadata
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs._shared.run_control import (
    PENDING_STATUSES,
    RESUME_RETRY_TAG,
    RUNNING_STATUSES,
    automatic_retry,
    earlier_runs,
)
from pipelines.defs.sync.batch_checks import member_events
from pipelines.defs.sync.reference_assets import NO_REFERENCES
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)
from store import AppDatabase

__all__ = [
    "BATCH_OP",
    "BATCH_SYNC_JOB",
    "BATCH_TAG",
    "BatchConfig",
    "batch_connection_ids",
    "batch_run_config",
    "batch_run_tags",
    "busy_in_batches",
    "incremental_sync_batch_job",
    "members_passed_over",
]

BATCH_SYNC_JOB = "incremental_sync_batch"
BATCH_OP = "sync_connection_batch"
BATCH_TAG = "ehrsync/batch"  # value: the number of connections (the ids are in the run config)


class BatchConfig(Config):
    connection_ids: list[str] = Field(description="The patient connections this run syncs, in order.")


def batch_run_config(connection_ids: list[str]) -> dict[str, object]:
    return {"ops": {BATCH_OP: {"config": {"connection_ids": list(connection_ids)}}}}


def batch_run_tags(source: str, count: int, trigger: str) -> dict[str, str]:
    """Source (the per-EHR run limit), trigger, and ``ehrsync/batch`` with the member count."""
    return {SOURCE_TAG: source, TRIGGER_TAG: trigger, KIND_TAG: "patient", BATCH_TAG: str(count)}


def batch_connection_ids(run: DagsterRun) -> list[str]:
    """The members of a batch run, from its run config (empty for any other run)."""
    node: object = run.run_config or {}
    for key in ("ops", BATCH_OP, "config", "connection_ids"):
        node = node.get(key) if isinstance(node, dict) else None
    return [str(cid) for cid in node] if isinstance(node, list) else []


def busy_in_batches(instance: DagsterInstance, db: AppDatabase) -> set[str]:
    """Connections held by a batch run queued or in progress (one query over batch runs). A "Re-execute from
    failure" holds only the members it will sync: those the runs it carries on completed are passed over
    (``passed_over_earlier``, the same answer whenever it starts), and holding them too kept their scheduled syncs
    back for as long as it waited in its source's queue, then sent them to the back of it."""
    runs = instance.get_runs(
        filters=RunsFilter(
            job_name=BATCH_SYNC_JOB, statuses=[*PENDING_STATUSES, *RUNNING_STATUSES, DagsterRunStatus.CANCELING]
        )
    )
    busy: set[str] = set()
    for run in runs:
        ids = batch_connection_ids(run)
        if run.tags.get(RESUME_RETRY_TAG) == "true":
            ids = [c for c in ids if c not in passed_over_earlier(db, earlier_runs(instance, run), ids, completed=True)]
        busy.update(ids)
    return busy


def members_passed_over(instance: DagsterInstance, run: DagsterRun, db: AppDatabase, now: datetime) -> set[str]:
    """The members a batch run does not sync (``engine.batch_sync.passed_over_earlier``): on a "Re-execute from
    failure", those the runs it carries on completed; on Dagster's automatic retry, also those their source holds
    past ``now`` (a throttle: no operator asked, the scheduler asks for them then). None on a first run or an
    operator's "Re-execute all" (every member again)."""
    resume, automatic = run.tags.get(RESUME_RETRY_TAG) == "true", automatic_retry(run)
    if not (resume or automatic):
        return set()
    held_at = now if automatic else None
    ids = batch_connection_ids(run)
    return passed_over_earlier(db, earlier_runs(instance, run), ids, completed=resume, held_at=held_at)


@dataclass(frozen=True)
class _MemberChecks:
    """What the members' asset checks read: the warehouse (duplicate keys) and the quarantine threshold."""

    warehouse: WarehouseResource
    max_ratio: float


def _record(context: OpExecutionContext, outcome: ConnectionOutcome, checks: _MemberChecks) -> None:
    """The member's per-type materializations and asset checks (types that did not fail), as its own run's assets
    would log them (``batch_checks``)."""
    if outcome.connection is None or outcome.deferred is not None:
        why = outcome.skipped or outcome.deferred or outcome.error  # error: not tried, the batch stopped
        context.log.info("connection %s not synced: %s", outcome.connection_id, (why or "")[:300])
        return
    who: dict[str, MetadataValue] = {
        **connection_metadata(outcome.connection),
        "sync_run_id": MetadataValue.text(outcome.sync_run_id),
    }
    reports = dict(outcome.reports)
    for resource_type in REFERENCED_TYPES if outcome.references_read else ():
        reports.setdefault(resource_type, TypeReport(resource_type, skipped_reason=NO_REFERENCES))
    events = member_events(
        outcome.connection_id, reports, who, warehouse=checks.warehouse, quarantine_max_ratio=checks.max_ratio
    )
    for event in events:  # Dagster's log_event takes check evaluations; its type alias leaves them out
        context.log_event(event)  # type: ignore[arg-type]
    verdict = "failed: " + (outcome.error or "") if outcome.error else "completed"
    context.log.info("connection %s %s in %.2f s", outcome.connection_id, verdict[:300], outcome.duration_s)


@op(name=BATCH_OP, description="Syncs each connection of the batch in turn; one failing leaves the others alone.")
def sync_connection_batch(
    context: OpExecutionContext,
    config: BatchConfig,
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
    ehr_http: EhrHttpResource,
    policy: SyncPolicyResource,
) -> None:
    with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
        checks = _MemberChecks(warehouse, policy.quarantine_max_ratio)
        done = members_passed_over(context.instance, context.run, env.db, datetime.now(UTC))
        if done:
            context.log.info("re-execution: %d member(s) done earlier or held by their source, not synced", len(done))
        batch = sync_batch(
            env,
            config.connection_ids,
            context.run.run_id,
            on_done=lambda o: _record(context, o, checks),
            passed_over=done,
        )
    failed, deferred = batch.failed, batch.deferred
    stopping = [c for c in batch.connections if c.stops_batch]  # a landing disk too full (``engine.batch_stop``)
    if failed:  # the run shows red; every member's row already holds its own outcome
        raise Failure(
            description=f"{len(failed)} of {len(batch.connections)} connections failed (each is retried alone)"
            + (f", {len(deferred)} deferred: their source is throttled or unreachable" if deferred else "")
            + "".join(f"; stopped: {s.stops_batch} (the members after {s.connection_id} not tried)" for s in stopping),
            metadata={
                "failed_connections": MetadataValue.json([f.connection_id for f in failed]),
                "deferred_connections": MetadataValue.json([d.connection_id for d in deferred]),
            },
        )


@job(
    name=BATCH_SYNC_JOB,
    executor_def=in_process_executor,
    description="Incremental syncs of many patient connections of one EHR source, each isolated (issue 14).",
)
def incremental_sync_batch_job() -> None:
    sync_connection_batch()
