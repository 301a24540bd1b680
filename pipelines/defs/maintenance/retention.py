"""Data retention: purge disconnected connections past their tenant's retention, prune merged landing files.

Two daily jobs, on by default, one run per day (run key ``<job>:<YYYYMMDD>``): the rules live in the engine
(``engine.retention.purge_due``, ``engine.landing_retention.prune_landing``); these ops only run them and report
the counts as metadata. docs/RETENTION.md describes both.
"""

from pathlib import Path

from dagster import (
    Config,
    Definitions,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    op,
)
from pydantic import Field

from engine.landing_retention import prune_landing
from engine.purge import PurgeTargets
from engine.retention import purge_due
from engine.setting_defaults import MAX_LANDING_RETENTION_DAYS
from pipelines.defs._shared.schedules import daily_schedule, in_process_job
from pipelines.resources import AppDatabaseResource, LandingZoneResource, WarehouseResource

__all__ = [
    "DATA_RETENTION_JOB",
    "LANDING_RETENTION_JOB",
    "DataRetentionConfig",
    "LandingRetentionConfig",
    "defs",
    "prune_landing_files_job",
    "purge_expired_connections_job",
]

DATA_RETENTION_JOB = "purge_expired_connections"
LANDING_RETENTION_JOB = "prune_landing_files"


class DataRetentionConfig(Config):
    limit: int | None = Field(default=None, ge=1, description="At most this many connections purged in the run.")


class LandingRetentionConfig(Config):
    """Unset ``keep_days``: the landing resource's (``EHRSYNC_LANDING_RETENTION_DAYS``, default 7)."""

    keep_days: int | None = Field(
        default=None, ge=0, le=MAX_LANDING_RETENTION_DAYS, description="Keep merged landing files this many days."
    )


def _ints(counts: dict[str, int]) -> dict[str, MetadataValue]:
    return {name: MetadataValue.int(value) for name, value in counts.items()}


@op(name="purge_expired_data", description="Purge disconnected connections past their tenant's retention period.")
def purge_expired_connections(
    context: OpExecutionContext,
    config: DataRetentionConfig,
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
) -> Output[dict[str, int]]:
    with app_db.open() as db:
        duckdb = (warehouse.duckdb_memory_limit, warehouse.duckdb_threads)
        targets = PurgeTargets(
            db, Path(landing.root), landing.attachments(), warehouse.target, landing.lock_wait_s, duckdb
        )
        report = purge_due(targets, limit=config.limit)
    counts = report.counts()
    metadata = {
        **_ints(counts),
        "purged_connections": MetadataValue.json(report.purged),
        "busy_connections": MetadataValue.json(report.busy),
        "failed_connections": MetadataValue.json(report.failed),
    }
    context.log.info("data retention: %s", counts)
    if report.failed:  # the rest were purged; the failed ones stay due and the next run tries them again
        raise Failure(f"{len(report.failed)} connection(s) could not be purged; see the log", metadata=metadata)
    return Output(counts, metadata=metadata)


@op(name="delete_merged_landing_files", description="Delete merged landing files older than the retention period.")
def prune_landing_files(
    context: OpExecutionContext,
    config: LandingRetentionConfig,
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
) -> Output[dict[str, int]]:
    keep_days = landing.retention_days if config.keep_days is None else config.keep_days
    with app_db.open() as db:
        report = prune_landing(db, Path(landing.root), keep_days=keep_days)
    counts = report.counts()
    context.log.info("landing retention (%d days): %s", keep_days, counts)
    return Output(counts, metadata={**_ints(counts), "keep_days": MetadataValue.int(keep_days)})


purge_expired_connections_job = in_process_job(
    purge_expired_connections,
    name=DATA_RETENTION_JOB,
    description="Purge disconnected connections past their tenant's data retention period (docs/RETENTION.md).",
)
prune_landing_files_job = in_process_job(
    prune_landing_files,
    name=LANDING_RETENTION_JOB,
    description="Delete merged landing files older than EHRSYNC_LANDING_RETENTION_DAYS (docs/RETENTION.md).",
)


daily_data_retention = daily_schedule(
    name="daily_data_retention",
    cron_schedule="15 2 * * *",
    job=purge_expired_connections_job,
    description="Daily 02:15 UTC: purge connections disconnected longer than their tenant's retention period.",
    run_key=DATA_RETENTION_JOB,
    trigger="retention",
)
daily_landing_retention = daily_schedule(
    name="daily_landing_retention",
    cron_schedule="45 2 * * *",
    job=prune_landing_files_job,
    description="Daily 02:45 UTC: delete merged landing files older than EHRSYNC_LANDING_RETENTION_DAYS.",
    run_key=LANDING_RETENTION_JOB,
    trigger="retention",
)

defs = Definitions(
    jobs=[purge_expired_connections_job, prune_landing_files_job],
    schedules=[daily_data_retention, daily_landing_retention],
)
