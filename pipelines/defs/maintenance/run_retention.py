"""Dagster's run and event storage pruned by age: it grows with every run (about 1.2 MB per sync run), not with data.

``prune_dagster_runs`` deletes finished runs (succeeded, failed or canceled) last updated more than
``EHRSYNC_RUN_RETENTION_DAYS`` ago, with their event logs, on the ``EHRSYNC_RUN_RETENTION_CRON`` schedule (UTC,
on by default). A queued, starting or running run is never touched, whatever its age. The newest successful run
of each job and connection is kept, so the UI still shows every connection's last good sync and its
materializations (a connection idle for longer than the retention keeps its partitions' status). Tick history
is pruned by the daemon itself (``retention:`` in ``deploy/dagster.yaml``).

The schedule's cron and the job's default age come from the settings, so this domain's definitions are built
from them (``run_retention_defs``) when the code location loads.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    Config,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunConfig,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    in_process_executor,
    job,
    op,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._utils.schedules import is_valid_cron_string
from pydantic import Field

from engine.errors import PipelineConfigurationError
from engine.run_retention import CRON_ENV, MAX_RUN_RETENTION_DAYS, RunRetention
from engine.run_tags import TRIGGER_TAG
from engine.settings import PipelineSettings
from pipelines.defs._shared.schedules import running_utc_schedule, tick_minute

__all__ = [
    "FINISHED",
    "PRUNE_OP",
    "RUN_RETENTION_JOB",
    "RUN_RETENTION_SCHEDULE",
    "PruneReport",
    "RunRetentionConfig",
    "prune_finished_runs",
    "run_retention_defs",
]

RUN_RETENTION_JOB = "prune_dagster_runs"
RUN_RETENTION_SCHEDULE = "prune_dagster_runs_schedule"
PRUNE_OP = "delete_old_runs"
FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
_PAGE = 500  # runs read per storage query while collecting what is due


class RunRetentionConfig(Config):
    """Run config; the job's default is the settings' ``EHRSYNC_RUN_RETENTION_DAYS``."""

    older_than_days: int = Field(
        ge=1, le=MAX_RUN_RETENTION_DAYS, description="Delete finished runs last updated more than this many days ago."
    )
    max_runs: int = Field(
        default=10_000, ge=1, description="At most this many runs deleted per run (the next run goes on)."
    )


@dataclass(frozen=True)
class PruneReport:
    """What one pruning pass did: the runs deleted (ids) and how many old runs it kept as their job's newest."""

    cutoff: datetime
    deleted: tuple[str, ...]
    kept_newest: int


def _newest_successes(instance: DagsterInstance, runs: Sequence[DagsterRun]) -> set[str]:
    """Ids of the newest successful run of each (job, partition) among ``runs``' jobs and partitions."""
    keep: set[str] = set()
    for job_name, partition in {(r.job_name, r.tags.get(PARTITION_NAME_TAG)) for r in runs}:
        tags = {PARTITION_NAME_TAG: partition} if partition else {}
        newest = instance.get_run_ids(
            RunsFilter(job_name=job_name, tags=tags, statuses=[DagsterRunStatus.SUCCESS]), limit=1
        )
        keep.update(newest)
    return keep


def _due_run_ids(instance: DagsterInstance, cutoff: datetime, max_runs: int) -> tuple[list[str], int]:
    """Ids of at most ``max_runs`` finished runs last updated before ``cutoff``, oldest first, past the ones kept
    as their job's newest success (and how many of those were passed). Paged by the storage's cursor and collected
    before any is deleted (a deleted cursor run ends a page query), so kept runs never fill the quota: with more
    kept runs than ``max_runs`` at the front, a pass that stopped there would delete nothing, every pass."""
    due: list[str] = []
    kept = 0
    cursor: str | None = None
    while len(due) < max_runs:
        page = instance.get_runs(
            RunsFilter(statuses=list(FINISHED), updated_before=cutoff), cursor=cursor, limit=_PAGE, ascending=True
        )
        if not page:
            break
        keep = _newest_successes(instance, page)
        kept += sum(1 for run in page if run.run_id in keep)
        due.extend(run.run_id for run in page if run.run_id not in keep)
        cursor = page[-1].run_id
    return due[:max_runs], kept


def prune_finished_runs(
    instance: DagsterInstance, *, older_than: timedelta, max_runs: int, now: datetime | None = None
) -> PruneReport:
    """Delete finished runs last updated before ``now - older_than`` (their event logs with them), oldest first,
    at most ``max_runs``; the newest successful run of each job and partition stays."""
    cutoff = (now or datetime.now(UTC)) - older_than
    due, kept = _due_run_ids(instance, cutoff, max_runs)
    for run_id in due:  # a finished run never runs again (a re-execution is a new run)
        instance.delete_run(run_id)
    return PruneReport(cutoff=cutoff, deleted=tuple(due), kept_newest=kept)


@op(name=PRUNE_OP, description="Delete finished Dagster runs, and their event logs, older than the retention.")
def delete_old_runs(context: OpExecutionContext, config: RunRetentionConfig) -> Output[int]:
    report = prune_finished_runs(
        context.instance, older_than=timedelta(days=config.older_than_days), max_runs=config.max_runs
    )
    context.log.info(
        "deleted %d finished runs last updated before %s (kept %d newest successful)",
        len(report.deleted),
        report.cutoff.isoformat(),
        report.kept_newest,
    )
    return Output(
        len(report.deleted),
        metadata={
            "deleted": MetadataValue.int(len(report.deleted)),
            "kept_newest": MetadataValue.int(report.kept_newest),
            "cutoff": MetadataValue.text(report.cutoff.isoformat()),
            "older_than_days": MetadataValue.int(config.older_than_days),
        },
    )


def run_retention_job(days: int) -> JobDefinition:
    """The pruning job, its default age ``days`` (a launch from the UI shows and may change it)."""

    @job(
        name=RUN_RETENTION_JOB,
        executor_def=in_process_executor,
        config=RunConfig(ops={PRUNE_OP: RunRetentionConfig(older_than_days=days)}),
        description="Delete finished Dagster runs and their event logs older than EHRSYNC_RUN_RETENTION_DAYS.",
    )
    def _prune() -> None:
        delete_old_runs()

    return _prune


def run_retention_defs(settings: PipelineSettings) -> Definitions:
    """The job and its schedule for the settings' retention (``EHRSYNC_RUN_RETENTION_DAYS`` / ``_CRON``)."""
    retention: RunRetention = settings.run_retention
    if not is_valid_cron_string(retention.cron):
        raise PipelineConfigurationError(f"{CRON_ENV}={retention.cron!r} is not a cron expression Dagster accepts")
    prune_job = run_retention_job(retention.days)

    @running_utc_schedule(
        name=RUN_RETENTION_SCHEDULE,
        cron_schedule=retention.cron,
        job=prune_job,
        description=f"{retention.cron} (UTC, EHRSYNC_RUN_RETENTION_CRON): delete finished runs older than "
        f"{retention.days} days (EHRSYNC_RUN_RETENTION_DAYS).",
    )
    def _schedule(context: ScheduleEvaluationContext) -> RunRequest:
        return RunRequest(run_key=f"prune-runs:{tick_minute(context)}", tags={TRIGGER_TAG: "retention"})

    return Definitions(jobs=[prune_job], schedules=[_schedule])
