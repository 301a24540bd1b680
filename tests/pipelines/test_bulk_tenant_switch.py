"""The real ``bulk_export`` Dagster job in-process (as the schedule, the Dagster UI and ``ehrsync sync`` run it) for a
tenant that has not turned ``ehrIntegrations.enableBulkExport`` on: before, it kicked off an export of every
patient; now the run fails naming the switch and its fix, no request reaches the EHR, and its ``sync_runs`` row is
a failure with no hold: the schedule's next tick asks nothing (its retry waits out the backoff, never at once)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from dagster import DagsterInstance

from ehrsync.run_now import run_sync_now
from engine import runs
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
    # tripwires: a token request, a kick-off or a CapabilityStatement read would each spend one
    tripwires = [urlsplit(ehr.fhir_base).path, "/oauth"]
    for path in tripwires:
        http.post(f"{ehr.base_url}/admin/faults", json={"kind": "500", "path": path, "times": 1}).raise_for_status()
    instance = DagsterInstance.ephemeral()
    scheduled = AppDb(str(world.env.db.engine.url), world.env.db, world.tenant_id)
    instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, [cid])
    due = evaluate_scheduled_syncs(instance, scheduled).run_requests or []
    assert [(r.partition_key, r.job_name) for r in due] == [(cid, "bulk_export")]
    try:
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
    # the schedule's next tick asks nothing: a failure waits out the retry backoff (5 min, then longer), never hot
    assert not evaluate_scheduled_syncs(instance, scheduled).run_requests
