"""The real ``bulk_export`` Dagster job in-process (as the schedule, the Dagster UI and ``ehrsync sync`` run it) for a
tenant that has not turned ``ehrIntegrations.enableBulkExport`` on: before, it kicked off an export of every
patient; now the run fails naming the switch and its fix, no request reaches the EHR, and its ``sync_runs`` row is
a failure with no hold. The schedule asks for no such run while the switch is off (``engine.bulk_due``), and resumes
an export kicked off before once it is on again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from dagster import DagsterInstance
from sqlalchemy import select, text, update

from ehrsync.run_now import run_sync_now
from engine import run_bulk_export, runs
from engine.models import BulkJob, SyncRun
from engine.settings import PipelineSettings
from pipelines.defs._shared.partitions import BULK_CONNECTIONS_PARTITIONS_NAME
from sandbox import SandboxConfig, SandboxServer
from store.models import Connection, Tenant
from tests.engine.helpers import SyncWorld
from tests.pipelines.appdb import AppDb
from tests.pipelines.backend import connect_backend_with_config
from tests.pipelines.scheduler import evaluate_scheduled_syncs


@pytest.fixture(scope="module")
def ehr() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(patients=2, seed=11)) as server:
        yield server


def test_the_bulk_job_of_a_tenant_with_bulk_export_off_fails_naming_the_switch_and_sends_nothing(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    cid = connect_backend_with_config(world, ehr, http=http)
    with world.env.db.session() as session:
        tenant, conn = session.get(Tenant, world.tenant_id), session.get(Connection, cid)
        assert tenant is not None and conn is not None
        conn.last_sync_at = datetime.now(UTC) - timedelta(days=3)  # its daily slot is due
        tenant.settings = {"practice_settings": {"ehrIntegrations": {"enableBulkExport": False}}}
        session.commit()
    instance = DagsterInstance.ephemeral()
    scheduled = AppDb(str(world.env.db.engine.url), world.env.db, world.tenant_id)
    instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, [cid])
    # its daily slot is due, but the schedule asks for no run the switch refuses (test_bulk_switch_schedule.py);
    # a person's run (``ehrsync sync``, the Dagster UI) is made, and fails by name
    assert not evaluate_scheduled_syncs(instance, scheduled).run_requests
    # tripwires: a token request, a kick-off or a CapabilityStatement read would each spend one
    tripwires = [urlsplit(ehr.fhir_base).path, "/oauth"]
    try:
        for path in tripwires:
            fault = {"kind": "500", "path": path, "times": 1}
            http.post(f"{ehr.base_url}/admin/faults", json=fault).raise_for_status()
        settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
        result = run_sync_now(cid, settings=settings, instance=instance)
        armed = sorted(f["path"] for f in http.get(f"{ehr.base_url}/admin/faults").json() if f.get("kind") == "500")
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()

    assert armed == sorted(tripwires), "no request reached the EHR"
    assert (result.job_name, result.success, result.failed_steps) == ("bulk_export", False, ("bulk__export",))
    why = " ".join(result.step_errors.values())
    assert "bulk_not_enabled" in why and "practice_settings.ehrIntegrations.enableBulkExport" in why, why
    assert "ehrsync auth seed FILE" in why, why
    record = runs.get(world.env.db, result.run_id)
    assert record is not None and record.status == "failed" and record.not_before is None
    assert (record.error or "").startswith("bulk_not_enabled: "), record.error
    # nor after the failed run: not its retry either, while the switch is off
    assert not evaluate_scheduled_syncs(instance, scheduled).run_requests


def _switch(world: SyncWorld, on: bool) -> None:
    with world.env.db.session() as session:
        tenant = session.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.settings = {"practice_settings": {"ehrIntegrations": {"enableBulkExport": on}}}
        session.commit()


def _jobs(world: SyncWorld, cid: str) -> list[tuple[str, str]]:
    with world.env.db.session() as session:
        return [(j.id, j.status) for j in session.scalars(select(BulkJob).where(BulkJob.connection_id == cid))]


def test_an_export_kicked_off_before_bulk_went_off_is_not_scheduled_while_off_and_resumed_once_on(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """The scheduled runs of the Dagster layer: while the switch is off the tick asks nothing (before, a run that
    failed ``bulk_not_enabled`` at every retry); on again, the next tick asks for the connection and that run
    finishes the export kicked off before (same job, no second kick-off)."""
    cid = connect_backend_with_config(world, ehr, http=http)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, [cid])
    scheduled = AppDb(str(world.env.db.engine.url), world.env.db, world.tenant_id)
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    http.post(f"{ehr.base_url}/admin/faults", json={"kind": "500", "path": "/bulk/files", "times": 1000})
    try:  # kicked off; every file download fails: the run fails, its job kept (the engine's fast retries)
        assert run_bulk_export(world.env, cid, "kicked-off").status == "failed"
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()
    kicked = _jobs(world, cid)
    assert len(kicked) == 1 and kicked[0][1] != "completed", kicked
    _switch(world, False)
    with world.env.db.session() as session:  # an hour on: the failure's retry (5 min backoff) is due
        session.execute(
            update(SyncRun)
            .where(SyncRun.connection_id == cid)
            .values(finished_at=datetime.now(UTC) - timedelta(hours=1))
        )
        session.commit()

    off = evaluate_scheduled_syncs(instance, scheduled)
    assert not off.run_requests and off.skip_reason is not None
    assert "'bulk_not_enabled': 1" in (off.skip_reason.skip_message or "")

    _switch(world, True)
    on = evaluate_scheduled_syncs(instance, scheduled).run_requests or []
    assert [(r.partition_key, r.job_name) for r in on] == [(cid, "bulk_export")]
    resumed = run_sync_now(cid, settings=settings, instance=instance)
    assert resumed.success, resumed.step_errors
    assert _jobs(world, cid) == [(kicked[0][0], "completed")], "the saved export is finished, no second kick-off"


def test_the_bulk_job_of_a_tenant_whose_settings_are_not_json_fails_naming_the_row(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """A hand edit of an SQLite app database (docs/TROUBLESHOOTING.md, ``tenant_setting_invalid``): before, reading
    the connection loaded the tenant's whole row for its name and raised a bare ``JSONDecodeError`` before the run
    (and in the job's first step); now the run is made and fails naming the tenant's row, its row ``failed``."""
    cid = connect_backend_with_config(world, ehr, http=http)
    with world.env.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tenants SET settings = '{enableBulkExport: true' WHERE id = :t"), {"t": world.tenant_id}
        )
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, [cid])
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    result = run_sync_now(cid, settings=settings, instance=instance)
    assert (result.job_name, result.success, result.failed_steps) == ("bulk_export", False, ("bulk__export",))
    record = runs.get(world.env.db, result.run_id)
    assert record is not None and record.status == "failed", record
    assert (record.error or "").startswith("tenant_setting_invalid: "), record.error
    assert "stored settings are not JSON" in (record.error or "") and world.tenant_id in (record.error or "")
