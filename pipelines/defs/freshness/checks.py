"""Freshness per connection: a check fails while connections are overdue for their schedule.

Dagster 1.13 evaluates an asset check per partition only as a preview (``AssetCheckSpec(partitions_def=)``),
and one check run per connection every few minutes would flood the run history at 10,000 connections. So each
partition set gets one unpartitioned check on its anchor asset (``warehouse/Patient`` for patient connections,
``bulk/export`` for bulk ones) that reads every active connection of that kind from the app database and fails
naming how many are overdue and by how much (ids and times only, no PHI). A schedule, on by default, runs the
check job every 15 minutes, so the check turns green again by itself once the syncs have caught up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    ConfigurableResource,
    Definitions,
    RunRequest,
    ScheduleEvaluationContext,
    asset_check,
    define_asset_job,
    in_process_executor,
)
from pydantic import Field

from engine.connection_snapshots import read_connections
from engine.freshness import DEFAULT_GRACE_MINUTES, MAX_GRACE_MINUTES, FreshnessReport, find_overdue
from engine.run_tags import TRIGGER_TAG
from engine.settings import PipelineSettings
from pipelines.defs._shared.metadata import FRESHNESS_CHECK
from pipelines.defs._shared.schedules import running_utc_schedule, tick_minute
from pipelines.defs.bulk.assets import BULK_EXPORT_KEY
from pipelines.defs.sync.type_assets import warehouse_key
from pipelines.resources import AppDatabaseResource, SyncPolicyResource

__all__ = [
    "FRESHNESS_CHECK",
    "FRESHNESS_JOB",
    "FreshnessResource",
    "bulk_freshness_check",
    "configured_defs",
    "defs",
    "freshness_schedule",
    "freshness_verdict",
    "patient_freshness_check",
]

FRESHNESS_JOB = "check_sync_freshness"
_LISTED = 50  # overdue connections listed in the metadata (the count covers all)


class FreshnessResource(ConfigurableResource["FreshnessResource"]):
    """How late a sync may be before its connection counts as overdue (on top of its period and window)."""

    grace_minutes: int = Field(
        default=DEFAULT_GRACE_MINUTES,
        ge=0,
        le=MAX_GRACE_MINUTES,
        description="Slack past a connection's period before it is overdue (EHRSYNC_FRESHNESS_GRACE_MINUTES).",
    )


def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def freshness_verdict(report: FreshnessReport, label: str, grace: timedelta) -> AssetCheckResult:
    """The check result for one partition set's report (``label``: "patient" or "bulk")."""
    listed = [
        {
            "connection": o.connection_id,
            "overdue_hours": _hours(o.overdue_by),
            "last_sync_at": o.last_sync_at.isoformat() if o.last_sync_at else None,
            "frequency_hours": o.frequency_hours,
        }
        for o in report.overdue[:_LISTED]
    ]
    metadata: dict[str, Any] = {
        "checked": report.checked,
        "overdue": len(report.overdue),
        "not_syncing": report.not_syncing,
        "no_patient": report.no_patient,  # active, but never synced by design: they file notes only
        "worst_overdue_hours": _hours(report.worst),
        "grace_minutes": int(grace.total_seconds() // 60),
        "overdue_connections": listed,
    }
    if not report.overdue:
        description = f"all {report.checked} active {label} connections synced on schedule"
    else:
        description = (
            f"{len(report.overdue)} of {report.checked} active {label} connections overdue "
            f"(worst by {_hours(report.worst)} h: {report.overdue[0].connection_id})"
        )
    return AssetCheckResult(
        passed=not report.overdue, severity=AssetCheckSeverity.ERROR, description=description, metadata=metadata
    )


def _freshness_check(anchor: AssetKey, *, bulk: bool) -> AssetChecksDefinition:
    label = "bulk" if bulk else "patient"

    @asset_check(
        asset=anchor,
        name=FRESHNESS_CHECK,
        description=f"Every active {label} connection synced within its period, plus grace and its source's closed "
        "window (connections.last_sync_at).",
    )
    def _fresh(
        app_db: AppDatabaseResource, policy: SyncPolicyResource, freshness: FreshnessResource
    ) -> AssetCheckResult:
        with app_db.open() as db:
            mine = [c for c in read_connections(db) if c.is_bulk == bulk]
        grace = timedelta(minutes=freshness.grace_minutes)
        report = find_overdue(datetime.now(UTC), mine, grace=grace, windows=policy.windows())
        return freshness_verdict(report, label, grace)

    return _fresh


patient_freshness_check = _freshness_check(warehouse_key("Patient"), bulk=False)
bulk_freshness_check = _freshness_check(BULK_EXPORT_KEY, bulk=True)

freshness_job = define_asset_job(
    FRESHNESS_JOB,
    selection=AssetSelection.checks(patient_freshness_check, bulk_freshness_check),
    executor_def=in_process_executor,
    description="Evaluates the per-connection freshness checks (reads the app database only, no EHR call).",
)


@running_utc_schedule(
    name="sync_freshness_checks",
    cron_schedule="*/15 * * * *",
    job=freshness_job,
    description="Every 15 minutes: are connections overdue for their schedule?",
)
def freshness_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(run_key=f"freshness:{tick_minute(context)}", tags={TRIGGER_TAG: "freshness"})


defs = Definitions(
    asset_checks=[patient_freshness_check, bulk_freshness_check],
    jobs=[freshness_job],
    schedules=[freshness_schedule],
)


def configured_defs(settings: PipelineSettings) -> Definitions:
    """The ``freshness`` resource with the operator's grace (``EHRSYNC_FRESHNESS_GRACE_MINUTES``)."""
    return Definitions(resources={"freshness": FreshnessResource(grace_minutes=settings.freshness_grace_minutes)})
