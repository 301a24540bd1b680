"""Daily grant keepalive (issue 4): refresh patient/user grants nobody used lately, before the EHR drops them.

Oracle Health forgets ``offline_access`` grants unused for three months and eCW refresh tokens last 90 days
(vendors.md §3, §4); a connection whose syncs are paused would otherwise need a person to authorize again.
The rules (which connections, locking, rotation, ``needs_reauth``) live in ``store.keepalive``;
this module only schedules them and reports the counts.
"""

from datetime import timedelta

from dagster import (
    Config,
    Definitions,
    MetadataValue,
    OpExecutionContext,
    Output,
    op,
)
from pydantic import Field

from engine.settings import MAX_KEEPALIVE_IDLE_DAYS
from pipelines.defs._shared.schedules import daily_schedule, in_process_job
from pipelines.resources import AppDatabaseResource, EhrHttpResource, SyncPolicyResource
from store import refresh_idle_grants

__all__ = ["KEEPALIVE_JOB", "KeepaliveConfig", "defs", "keep_grants_alive", "refresh_idle_grants_schedule"]

KEEPALIVE_JOB = "keep_grants_alive"


class KeepaliveConfig(Config):
    """Run config; unset ``idle_days`` means the policy's (``EHRSYNC_KEEPALIVE_IDLE_DAYS``, default 7)."""

    idle_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_KEEPALIVE_IDLE_DAYS,
        description="Refresh grants whose tokens were last issued more than this many days ago.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="At most this many refresh attempts in the run, oldest grants first."
    )


@op(name="refresh_idle_grants", description="Refresh idle patient/user grants so the EHR does not let them lapse.")
def refresh_idle_grants_op(
    context: OpExecutionContext,
    config: KeepaliveConfig,
    app_db: AppDatabaseResource,
    ehr_http: EhrHttpResource,
    policy: SyncPolicyResource,
) -> Output[dict[str, int]]:
    idle_days = config.idle_days or policy.keepalive_idle_days
    with app_db.open() as db:
        vault = app_db.vault(db, ehr_http.client())
        try:
            report = refresh_idle_grants(db, vault, idle_for=timedelta(days=idle_days), limit=config.limit)
        finally:
            vault.close()
    counts = report.counts()
    if report.failed:
        context.log.warning("%d grant(s) could not be refreshed now; the next run retries them", len(report.failed))
    if report.needs_reauth:
        context.log.warning("%d grant(s) were refused and need re-authorization", len(report.needs_reauth))
    if report.client_rejected:
        context.log.warning(
            "%d connection(s) stopped: the EHR refused the app's client authentication (check its secret or key "
            "registration, then retry them)",
            len(report.client_rejected),
        )
    context.log.info("keepalive (idle > %d days): %s", idle_days, counts)
    metadata = {name: MetadataValue.int(count) for name, count in counts.items()}
    return Output(
        counts,
        metadata={
            **metadata,
            "idle_days": MetadataValue.int(idle_days),
            "needs_reauth_connections": MetadataValue.json(list(report.needs_reauth)),
            "failed_connections": MetadataValue.json(list(report.failed)),
            "client_rejected_connections": MetadataValue.json(list(report.client_rejected)),
        },
    )


keep_grants_alive = in_process_job(
    refresh_idle_grants_op,
    name=KEEPALIVE_JOB,
    description="Refresh idle patient/user grants (backend and group connections have none to keep alive).",
)


refresh_idle_grants_schedule = daily_schedule(
    name="refresh_idle_grants",
    cron_schedule="30 4 * * *",
    job=keep_grants_alive,
    description="Daily 04:30 UTC: refresh grants idle longer than EHRSYNC_KEEPALIVE_IDLE_DAYS.",
    run_key="keepalive",
    trigger="keepalive",
)

defs = Definitions(jobs=[keep_grants_alive], schedules=[refresh_idle_grants_schedule])
