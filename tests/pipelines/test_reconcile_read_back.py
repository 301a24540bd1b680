"""The weekly reconciliation's read-back (BDX-31) failing for one type: the op reconciles every other type (their
deletions tombstoned), then fails naming that type, instead of stopping at it every week."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from dagster import DagsterInstance

from connectors.errors import FhirServerError
from ehrsync.run_now import run_sync_now
from engine import deletes
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient
from tests.pipelines.test_end_to_end import live_counts


def test_a_failed_read_back_fails_the_op_after_every_type_is_reconciled_bdx31(
    tmp_path: Path, http: httpx.Client, world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as one, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, one, http=http)
        assert run_sync_now(cid, settings=settings, instance=instance).success
        con = duckdb.connect(settings.warehouse_url)  # the warehouse lacks the Patient (the first type) now
        con.execute("DELETE FROM fhir_resources WHERE resource_type = 'Patient'")
        con.close()
        changes = http.post(f"{one.base_url}/admin/mutate", json={"delete": 2, "seed": 3})
        changes.raise_for_status()
        deleted = [ref.split("/")[0] for ref in changes.json()["deleted"]]
        assert deleted and "Patient" not in deleted
        before = live_counts(settings.warehouse_url, cid)

        def unreadable(*_: Any, **__: Any) -> Any:
            raise FhirServerError("GET Patient/... answered HTTP 500", 500)

        monkeypatch.setattr(deletes, "land_by_ids", unreadable)
        reconcile = build_definitions(settings).resolve_job_def("reconcile_deletes")
        result = reconcile.execute_in_process(partition_key=cid, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "Patient: fhir_server_error" in str(failure.step_failure_data.error)
    after = live_counts(settings.warehouse_url, cid)
    for rtype in set(deleted):  # the types after the Patient were reconciled all the same
        assert after[rtype] == before[rtype] - deleted.count(rtype), rtype
