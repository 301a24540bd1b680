"""The shape every ehrsync maintenance job shares: one op run in-process, on a schedule that is on by default
and reads its cron in UTC, keyed by the day of its tick (a tick retried by the daemon asks for no second run)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    OpDefinition,
    PartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    in_process_executor,
    job,
    schedule,
)

from engine.run_tags import TRIGGER_TAG

if TYPE_CHECKING:  # an asset job (``define_asset_job``) before Definitions resolve it; Dagster exports no name for it
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

__all__ = ["daily_schedule", "in_process_job", "running_utc_schedule", "tick_day", "tick_hour", "tick_minute"]


def in_process_job(
    op_def: OpDefinition, *, name: str, description: str, partitions_def: PartitionsDefinition[Any] | None = None
) -> JobDefinition:
    """A job of the one op ``op_def``, run in the launching process (no Python start per step)."""

    @job(name=name, executor_def=in_process_executor, partitions_def=partitions_def, description=description)
    def _one_op() -> None:
        op_def()

    return _one_op


def running_utc_schedule(
    *, name: str, cron_schedule: str, job: JobDefinition | UnresolvedAssetJobDefinition, description: str
) -> Callable[[Callable[..., Any]], ScheduleDefinition]:
    """``@schedule`` running by default (no one has to switch it on) with its cron in UTC."""
    return schedule(
        name=name,
        cron_schedule=cron_schedule,
        job=job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=description,
    )


def daily_schedule(
    *, name: str, cron_schedule: str, job: JobDefinition, description: str, run_key: str, trigger: str
) -> ScheduleDefinition:
    """A running UTC schedule asking for one run of ``job`` a day: run key ``<run_key>:<YYYYMMDD>`` (the tick's
    day, so a tick the daemon retries asks for no second run), tagged with its ``trigger``."""

    def _once_a_day(context: ScheduleEvaluationContext) -> RunRequest:
        return RunRequest(run_key=f"{run_key}:{tick_day(context)}", tags={TRIGGER_TAG: trigger})

    return running_utc_schedule(name=name, cron_schedule=cron_schedule, job=job, description=description)(_once_a_day)


def tick_hour(context: ScheduleEvaluationContext) -> datetime:
    """The UTC hour of the tick being evaluated (now's, for a test or a manual evaluation)."""
    tick = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
    return tick.replace(minute=0, second=0, microsecond=0)


def tick_day(context: ScheduleEvaluationContext) -> str:
    """The UTC day (``YYYYMMDD``) of the tick being evaluated (now, for a test or a manual evaluation)."""
    return f"{tick_hour(context):%Y%m%d}"


def tick_minute(context: ScheduleEvaluationContext) -> str:
    """The UTC minute (``YYYYMMDDTHHMM``) of the tick being evaluated: the run key of a schedule that runs more often
    than hourly (now's, for a test or a manual evaluation)."""
    return f"{(context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M}"
