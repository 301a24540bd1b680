"""``ehrsync sync`` of a Bulk connection whose tenant has not turned ``ehrIntegrations.enableBulkExport`` on: before,
it kicked off an export of every patient; now one ``Error:`` line names the switch and the fix before Dagster loads
(as for an unsyncable connection), and nothing reaches the EHR."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import text

from sandbox import SandboxServer
from store.models import Tenant
from tests.ehrsync.cli_runs import http_of, one_line_error, run_cli
from tests.engine.helpers import SyncWorld
from tests.pipelines.backend import connect_backend_with_config


def test_sync_of_a_bulk_connection_whose_tenant_has_bulk_export_off_says_so_and_sends_nothing(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    http = http_of(world)
    cid = connect_backend_with_config(world, ehr, http=http)
    with world.env.db.session() as session:
        tenant = session.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.settings = {"practice_settings": {"ehrIntegrations": {}}}  # left out: off
        session.commit()
    tripwires = [urlsplit(ehr.fhir_base).path, "/oauth"]  # a token request or a kick-off would spend one
    for path in tripwires:
        http.post(f"{ehr.base_url}/admin/faults", json={"kind": "500", "path": path, "times": 1}).raise_for_status()
    try:
        proc = run_cli(world, tmp_path, "sync", cid)
        armed = sorted(f["path"] for f in http.get(f"{ehr.base_url}/admin/faults").json() if f.get("kind") == "500")
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()

    assert armed == sorted(tripwires), "no request reached the EHR"
    one_line_error(
        proc, "bulk_not_enabled: ", "practice_settings.ehrIntegrations.enableBulkExport", "ehrsync auth seed FILE"
    )
    assert "started" not in proc.stdout, "refused before Dagster: no run"


def test_sync_of_a_bulk_connection_whose_tenant_settings_are_not_json_names_the_row(
    tmp_path: Path, ehr: SandboxServer, world: SyncWorld
) -> None:
    """A hand edit of an SQLite app database left the tenant's ``settings`` not JSON (docs/TROUBLESHOOTING.md,
    ``tenant_setting_invalid``). Before, reading the connection decoded the tenant's whole row for its name, so
    ``ehrsync sync`` (and the Dagster run's first step) failed ``JSONDecodeError: Expecting property name ...``,
    naming neither the tenant nor the setting; now the Bulk switch's reader names them, before Dagster loads."""
    cid = connect_backend_with_config(world, ehr, http=http_of(world))
    with world.env.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tenants SET settings = '{enableBulkExport: true' WHERE id = :t"), {"t": world.tenant_id}
        )
    proc = run_cli(world, tmp_path, "sync", cid)
    one_line_error(proc, "tenant_setting_invalid: ", "stored settings are not JSON", world.tenant_id)
    assert "JSONDecodeError" not in proc.stderr and "enableBulkExport: true" not in proc.stderr, proc.stderr
