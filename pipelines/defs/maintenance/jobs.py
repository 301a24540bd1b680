"""Weekly deletion reconciliation (BDX-31): REST search never reports deletes, so compare id lists.

Patient connections only: Bulk connections learn deletions from the export's ``deleted`` files. Each connection
has its own hour of the week (``reconcile_hour``), so the week's runs are spread over 168 hourly ticks: queued all at
one tick, 10,000 of them would count as busy and hold back every connection's scheduled sync for hours. One whose
source is held at its hour, or whose run a throttle of its source stopped partway, is asked for once the hold ends,
within the week, and one whose run found the connection busy (a sync holding its lock) at the first tick that
finds it free (``reconcile_slots``); such a run reconciles only the types the week's earlier runs did not finish
(``reconcile_resume``).
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetMaterialization,
    Definitions,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunRequest,
    ScheduleEvaluationContext,
    op,
)
from dagster._core.storage.tags import RUN_KEY_TAG

from engine import PATIENT_TYPES, ReconcileReport
from engine.connection_snapshots import read_connections
from engine.reconcile_run import reconcile_types
from engine.retries import holds_ended, source_holds
from engine.run_tags import run_tags
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME, patient_connections_partitions
from pipelines.defs._shared.schedules import in_process_job, running_utc_schedule, tick_hour
from pipelines.defs._shared.source_hold import SourceHeldFailure, stop_if_connection_held
from pipelines.defs.maintenance.reconcile_resume import reconciled_earlier
from pipelines.defs.maintenance.reconcile_slots import (
    BUSY,
    HELD_ASIDE,
    HELD_TAG,
    HOURS_A_WEEK,
    busy_slots,
    defer_busy,
    due_slots,
    reconcile_hour,
    run_key,
    unrequested,
)
from pipelines.defs.sync.type_assets import warehouse_key
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)
from store import AppDatabase

__all__ = [
    "HOURS_A_WEEK",
    "RECONCILE_JOB",
    "RECONCILE_TRIGGER",
    "defs",
    "reconcile_deletes_job",
    "reconcile_hour",
    "weekly_reconcile_schedule",
]

RECONCILE_JOB = "reconcile_deletes"
RECONCILE_TRIGGER = "reconcile"  # the weekly schedule's ``ehrsync/trigger``: no person asked for the run
_HELD_THEN = (
    "nothing was reconciled or tombstoned; the weekly schedule asks for it again once the hold ends (`ehrsync "
    "reconcile` or a re-execution from the Dagster UI tries at once)"
)


def _stop_if_held(context: OpExecutionContext, db: AppDatabase, connection_id: str, now: datetime) -> None:
    """Fail a run no person asked for while its source is held, tagged ``ehrsync/held`` ``true`` so the schedule
    asks for its slot again once the hold ends; a run that goes on says ``false`` (a retry or re-execution of a
    held run carries its tags)."""
    try:
        stop_if_connection_held(context.run, RECONCILE_TRIGGER, db, connection_id, "reconciliation", _HELD_THEN, now)
    except SourceHeldFailure:
        context.instance.add_run_tags(context.run_id, {HELD_TAG: "true"})
        raise
    if context.run.tags.get(HELD_TAG) in HELD_ASIDE:
        context.instance.add_run_tags(context.run_id, {HELD_TAG: "false"})


def _tag_held_partway(context: OpExecutionContext, value: str) -> Callable[..., None]:
    """Tag a week's run (one carrying its slot's run key) stopped partway ``ehrsync/held`` ``value``: ``true``
    (a throttle of its source), as one held before any request is: the schedule asks for its slot again once the
    hold ends; ``busy`` (another run, a sync, holding the connection's lock): at the next tick. The types it did
    not reach wait hours, not another week (their deletions stayed live)."""

    def held(*_why: object) -> None:
        if context.run.tags.get(RUN_KEY_TAG):
            context.instance.add_run_tags(context.run_id, {HELD_TAG: value})

    return held


def _reconciled_earlier(context: OpExecutionContext, connection_id: str) -> set[str]:
    """The types earlier runs of this week's slot finished (``reconcile_resume``): this run does not list them
    again."""
    done = reconciled_earlier(context.instance, context.run, RECONCILE_JOB, RECONCILE_TRIGGER)
    if done:
        context.log.info(
            "%s: %s reconciled earlier this week by this slot's runs", connection_id, ", ".join(sorted(done))
        )
    return done


@op(
    description="Tombstone warehouse rows whose ids the EHR no longer lists and, asked for again, confirms gone, "
    "and read back the ids it lists that the warehouse lacks, type by type."
)
def reconcile_connection(
    context: OpExecutionContext,
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
    ehr_http: EhrHttpResource,
    policy: SyncPolicyResource,
) -> Output[dict[str, int]]:
    connection_id = context.partition_key

    def changed(report: ReconcileReport) -> None:
        if _changed(report):
            context.log_event(_materialization(connection_id, report))

    with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
        # a throttle the source named (noted by a sync, or by an earlier reconcile): asking now is only refused
        now = datetime.now(UTC)
        _stop_if_held(context, env.db, connection_id, now)
        done = _reconciled_earlier(context, connection_id)
        reports = reconcile_types(
            env,
            connection_id,
            [t for t in PATIENT_TYPES if t not in done],
            run_id=context.run_id,
            on_report=changed,
            on_hold=_tag_held_partway(context, "true"),
            on_busy=_tag_held_partway(context, BUSY),
        )
    deleted = {r.resource_type: r.tombstoned for r in reports}
    context.log.info(
        "reconciled %s: %d rows tombstoned, %d still on the EHR though not listed, %d unconfirmed (kept live), "
        "%d ids listed by the EHR but not stored",
        connection_id,
        sum(deleted.values()),
        sum(r.alive for r in reports),
        sum(r.unconfirmed for r in reports),
        sum(r.unlisted for r in reports),
    )
    metadata: dict[str, Any] = {
        "deleted": MetadataValue.json(deleted),
        "reconciled_earlier": MetadataValue.json(sorted(done)),
    }
    for name in ("unlisted", "alive", "unconfirmed", "unconfirmable"):  # the types with any
        metadata[name] = MetadataValue.json({r.resource_type: getattr(r, name) for r in reports if getattr(r, name)})
    metadata["not_reconciled"] = MetadataValue.json({r.resource_type: r.error for r in reports if r.error})
    metadata["skipped"] = MetadataValue.json({r.resource_type: r.skipped_reason for r in reports if r.skipped_reason})
    for report in reports:  # a standing condition of the grant, not a failure: said once a run, the op succeeds
        if report.unconfirmable is not None:
            context.log.warning(
                "%s: %d %s id(s) the EHR no longer lists stay live, their deletion unconfirmable: %s",
                connection_id,
                report.unconfirmed,
                report.resource_type,
                report.unconfirmable,
            )
    failure = _failure(connection_id, reports, metadata)
    if failure is not None:
        raise failure
    return Output(deleted, metadata=metadata)


def _failure(connection_id: str, reports: list[ReconcileReport], metadata: dict[str, Any]) -> Failure | None:
    """The op's failure, raised once every type is reconciled: types not reconciled (their listing failed, nothing
    of them tombstoned, or the run stopped before them), whose read-back failed (their tombstones kept) or whose
    confirmation of deletions failed (those rows kept live); None when none happened. A type whose deletions the
    grant lets nothing confirm (``unconfirmable``) is no failure: the output metadata says so."""
    unreconciled = {r.resource_type: r.error for r in reports if r.error}
    failed = {r.resource_type: r.recovered.error for r in reports if r.recovered is not None and r.recovered.error}
    unconfirmed = {r.resource_type: f"{r.unconfirmed} id(s), {r.confirm_error}" for r in reports if r.confirm_error}
    problems = []
    if unreconciled:
        problems.append(
            f"{', '.join(unreconciled)} not reconciled (nothing of them tombstoned; the next reconcile retries them): "
            + "; ".join(f"{t}: {e}" for t, e in unreconciled.items())
        )
    if failed:
        problems.append(
            f"reading back what the EHR lists and the warehouse lacks failed for {', '.join(sorted(failed))}: "
            + "; ".join(f"{t}: {e}" for t, e in sorted(failed.items()))
        )
    if unconfirmed:
        problems.append(
            f"confirming deletions failed for {', '.join(sorted(unconfirmed))} (those rows kept live): "
            + "; ".join(f"{t}: {e}" for t, e in sorted(unconfirmed.items()))
        )
    if not problems:
        return None
    return Failure(
        description=f"reconciled {connection_id}, but " + "; and ".join(problems),
        metadata={
            **metadata,
            "read_back_failed": MetadataValue.json(failed),
            "confirm_failed": MetadataValue.json(unconfirmed),
        },
    )


def _changed(report: ReconcileReport) -> bool:
    """Did the reconciliation change the type's table: a tombstone, a read-back, a newer copy of one found alive?"""
    recovered = report.recovered is not None and report.recovered.error is None
    stored = report.checked is not None and bool(report.checked.created or report.checked.updated)
    return bool(report.tombstoned) or recovered or stored


def _materialization(connection_id: str, report: ReconcileReport) -> AssetMaterialization:
    """The type's warehouse table changed: rows tombstoned, resources read back (their counts, as a sync's), and
    the ids the listing lacked that the EHR still has (``alive``) or did not confirm gone (``unconfirmed``)."""
    metadata: dict[str, Any] = {
        "deleted": MetadataValue.int(report.tombstoned),
        "alive": MetadataValue.int(report.alive),
        "unconfirmed": MetadataValue.int(report.unconfirmed),
        "step": MetadataValue.text("reconcile"),
    }
    if report.recovered is not None:
        got = report.recovered
        metadata |= {"read_back": MetadataValue.int(got.fetched), "created": MetadataValue.int(got.created)}
        metadata |= {"updated": MetadataValue.int(got.updated), "not_found": MetadataValue.int(got.not_found)}
    if report.checked is not None:
        metadata["alive_updated"] = MetadataValue.int(report.checked.updated)
    if report.unconfirmable is not None:
        metadata["unconfirmable"] = MetadataValue.text(report.unconfirmable)
    return AssetMaterialization(
        asset_key=warehouse_key(report.resource_type),
        partition=connection_id,
        description="Deletion reconciliation (BDX-31): rows tombstoned once the EHR confirmed them gone, and "
        "resources the searches missed read back.",
        metadata=metadata,
    )


reconcile_deletes_job = in_process_job(
    reconcile_connection,
    name=RECONCILE_JOB,
    partitions_def=patient_connections_partitions,
    description="Deletion reconciliation of one patient connection (BDX-31).",
)


@running_utc_schedule(
    name="weekly_reconcile_deletes",
    cron_schedule="0 * * * *",
    job=reconcile_deletes_job,
    description="Hourly: a reconciliation run for each active patient connection whose hour of the week this is "
    "(each connection once a week, spread over the week); one whose source was held then, once the hold ends; one "
    "whose run found the connection busy, once it is free.",
)
def weekly_reconcile_schedule(
    context: ScheduleEvaluationContext, app_db: AppDatabaseResource, landing: LandingZoneResource
) -> list[RunRequest]:
    keys = set(context.instance.get_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME))
    tick = tick_hour(context)
    with app_db.open() as db:
        connections = {c.id: c for c in read_connections(db) if c.syncable and not c.is_bulk and c.id in keys}
        holds, ended = source_holds(db), holds_ended(db, tick - timedelta(hours=1), tick)
    busy = busy_slots(context.instance, RECONCILE_JOB, tick)
    due = due_slots(connections, tick, holds, ended, busy)
    late = unrequested(context.instance, RECONCILE_JOB, (run_key(c, s) for c, s in due.items() if s != tick))
    asked = {c: s for c, s in due.items() if s == tick or run_key(c, s) in late}
    asked = defer_busy(asked, busy, landing.zone().root, context.log)  # busy still: no run, none of the cap spent
    return [
        RunRequest(
            run_key=run_key(cid, slot),
            partition_key=cid,
            tags=run_tags(
                connection_id=cid,
                tenant_id=connections[cid].tenant_id,
                source=connections[cid].provider_id,
                trigger=RECONCILE_TRIGGER,
            ),
        )
        for cid, slot in asked.items()
    ]


defs = Definitions(jobs=[reconcile_deletes_job], schedules=[weekly_reconcile_schedule])
