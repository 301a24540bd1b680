"""The daily retention jobs (pipelines/defs/maintenance/retention.py) run in-process from the full code location:
tenant data retention purges only the disconnected connections past their tenant's period; landing retention
deletes merged landing files (EHRSYNC_LANDING_RETENTION_DAYS) and keeps one not merged yet."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from dagster import DagsterInstance, DefaultScheduleStatus, build_schedule_context
from sqlalchemy import select

from engine import hold_connection, land_resource_type
from engine.purge import PURGE_ACTION
from engine.retention import RETENTION_ACTOR
from engine.run_tags import TRIGGER_TAG
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs.maintenance.retention import (
    DATA_RETENTION_JOB,
    LANDING_RETENTION_JOB,
    daily_data_retention,
    daily_landing_retention,
)
from pipelines.resources import LandingZoneResource, default_resources
from sandbox import SandboxServer
from store.models import AuditEvent, Connection, Tenant
from tests.engine.helpers import SyncWorld, connect_patient, sandbox_patients
from tests.engine.job_runs import run_sync, world_resources, world_url

TYPES = ["Patient", "Condition"]


def _settings(tmp_path: Path, world: SyncWorld, **env: str) -> PipelineSettings:
    return PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": world_url(world), **env}
    )


def _synced(world: SyncWorld, sandbox: SandboxServer, http: httpx.Client, index: int) -> str:
    conn = connect_patient(world, sandbox, http=http, patient_id=sandbox_patients(http, sandbox)[index])
    assert run_sync(world, conn, types=TYPES).status == "completed"
    return conn


def _disconnected(world: SyncWorld, connection_id: str, days_ago: int) -> None:
    world.env.vault.revoke_and_delete(connection_id)
    with world.env.db.session() as s, s.begin():
        row = s.get(Connection, connection_id)
        assert row is not None and row.disconnected_at is not None
        row.disconnected_at = datetime.now(UTC) - timedelta(days=days_ago)


def _live_rows(world: SyncWorld, connection_id: str) -> int:
    with world.env.warehouse() as wh:
        return wh.key_counts(connection_id).live


def test_data_retention_job_purges_only_what_is_due(
    tmp_path: Path, world: SyncWorld, sandbox: SandboxServer, http: httpx.Client
) -> None:
    due, recent, active = (_synced(world, sandbox, http, i) for i in range(3))
    _disconnected(world, due, days_ago=31)
    _disconnected(world, recent, days_ago=5)
    with world.env.db.session() as s, s.begin():
        tenant = s.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.data_retention_days = 30
    job = build_definitions(_settings(tmp_path, world)).resolve_job_def(DATA_RETENTION_JOB)

    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
        again = job.execute_in_process(instance=instance)

    assert result.success and again.success
    counts = result.output_for_node("purge_expired_data")
    assert counts["purged"] == 1 and counts["warehouse_rows"] > 0 and counts["landing_files"] > 0
    (materialized,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialized.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["purged"].value == 1 and metadata["purged_connections"].value == [due]
    assert again.output_for_node("purge_expired_data")["purged"] == 0  # done once, not every day
    assert _live_rows(world, due) == 0 and _live_rows(world, recent) > 0 and _live_rows(world, active) > 0
    with world.env.db.session() as s:
        purged = s.scalars(select(Connection.id).where(Connection.data_purged_at.is_not(None))).all()
        actors = s.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == PURGE_ACTION, AuditEvent.outcome == "success")
        ).all()
    assert purged == [due] and actors == [RETENTION_ACTOR]


def test_landing_retention_job_keeps_what_is_not_merged(
    tmp_path: Path, world: SyncWorld, sandbox: SandboxServer, http: httpx.Client
) -> None:
    conn = _synced(world, sandbox, http, 0)
    run_id = uuid.uuid4().hex
    with hold_connection(world.env, conn, run_id):
        land_resource_type(world.env, conn, "Encounter", run_id)  # landed; its upsert has not run
    files = set((Path(world.env.zone.root) / conn).glob("*/*.parquet"))
    pending = {p for p in files if p.parent.name == "Encounter"}
    old = time.time() - 2 * 86_400
    for path in files:
        os.utime(path, (old, old))

    with DagsterInstance.ephemeral() as instance:
        default = build_definitions(_settings(tmp_path, world)).resolve_job_def(LANDING_RETENTION_JOB)
        kept = default.execute_in_process(instance=instance)  # default: 7 days
        one_day = build_definitions(_settings(tmp_path, world, EHRSYNC_LANDING_RETENTION_DAYS="1"))
        pruned = one_day.resolve_job_def(LANDING_RETENTION_JOB).execute_in_process(instance=instance)

    assert kept.output_for_node("delete_merged_landing_files")["files_deleted"] == 0
    counts = pruned.output_for_node("delete_merged_landing_files")
    assert (counts["files_deleted"], counts["files_needed"]) == (len(files) - 1, 1)
    assert set((Path(world.env.zone.root) / conn).glob("*/*.parquet")) == pending


def test_retention_schedules_run_by_default_once_a_day() -> None:
    tick = datetime(2026, 12, 3, 2, 15, tzinfo=UTC)
    for schedule, job in ((daily_data_retention, DATA_RETENTION_JOB), (daily_landing_retention, LANDING_RETENTION_JOB)):
        assert schedule.default_status == DefaultScheduleStatus.RUNNING
        request = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
        assert request is not None and [r.run_key for r in request] == [f"{job}:20261203"]
        assert [r.tags[TRIGGER_TAG] for r in request] == ["retention"]


def test_the_step_environment_carries_the_landing_retention(world: SyncWorld) -> None:
    """EHRSYNC_LANDING_RETENTION_DAYS reaches the sync steps through the landing resource (0: files go once merged)."""
    resources = world_resources(world)
    landing = LandingZoneResource(
        root=str(world.env.zone.root), attachments_root=str(world.env.attachments.root), retention_days=0
    )
    with sync_environment(
        resources["app_db"], landing, resources["warehouse"], resources["ehr_http"], resources["policy"]
    ) as env:
        assert env.landing_retention_days == 0
    settings = PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(world.env.zone.root.parent), "EHRSYNC_LANDING_RETENTION_DAYS": "0"}
    )
    assert default_resources(settings)["landing"].retention_days == 0  # type: ignore[attr-defined]
