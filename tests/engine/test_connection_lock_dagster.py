"""The per-connection lock through Dagster (issue 10): while another process syncs a connection, a Dagster run of
that connection fails its steps with ``connection_busy`` naming the holder, without a request to the EHR; once
the holder is gone the same run succeeds. Dagster's own limits are not what keeps them apart."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterEventType, DagsterInstance

from ehrsync.run_now import run_sync_now
from engine import runs
from engine.connection_lock import LOCK_WAIT_ENV
from engine.settings import PipelineSettings
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, serve
from tests.engine.helpers import SyncWorld, connect_static, make_environment

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncWorld]:
    with httpx.Client(timeout=30.0) as http:
        made = make_environment(tmp_path / "state", http=http)
        monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(made.cipher_key).decode())
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        yield made
        made.env.db.dispose()


def _patient_server() -> FakeFhir:
    fake = FakeFhir()

    def patient(_path: str, _q: dict[str, list[str]]) -> Reply:
        return bundle([{"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2026-01-01T00:00:00Z"}}])

    def empty(_path: str, _q: dict[str, list[str]]) -> Reply:
        return bundle([])

    fake.routes["/fhir/Patient"] = patient
    for rtype in ("Observation", "Condition", "Encounter", "MedicationRequest", "AllergyIntolerance", "Procedure"):
        fake.routes[f"/fhir/{rtype}"] = empty
    for rtype in ("Immunization", "DiagnosticReport", "DocumentReference", "CarePlan", "Goal", "Device"):
        fake.routes[f"/fhir/{rtype}"] = empty
    return fake


def _failures(instance: DagsterInstance, run_id: str) -> list[str]:
    events = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    return [_error_text(e.dagster_event) for e in events]


def _error_text(event: Any) -> str:
    return str(event.event_specific_data.error.to_string())


def test_a_dagster_run_is_refused_while_another_process_syncs_the_connection(
    tmp_path: Path, world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings built from a mapping read only that mapping (never the process), so the lock wait goes in it.
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state"), LOCK_WAIT_ENV: "0"})
    assert settings.landing_dir == world.env.zone.root.resolve()
    with serve(_patient_server()) as fake, DagsterInstance.ephemeral() as instance:
        cid = connect_static(world, fake.fhir_base, patient_id="p1")
        cmd = [sys.executable, "-m", "tests.engine.residue_driver", "hold", str(settings.landing_dir), cid]
        holder = subprocess.Popen([*cmd, "run-elsewhere"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            refused = run_sync_now(cid, settings=settings, instance=instance)
            failures = _failures(instance, refused.run_id)
        finally:
            holder.kill()
            holder.wait(timeout=10)
        assert not refused.success
        assert any(step.startswith("landing__") for step in refused.failed_steps), refused.failed_steps
        assert failures and all(f"run run-elsewhere (pid {holder.pid} " in f for f in failures), failures
        assert all("ConnectionBusyError" in f for f in failures)
        assert fake.requests == [], "nothing was asked of the EHR while another process held the connection"

        allowed = run_sync_now(cid, settings=settings, instance=instance)
        assert allowed.success, allowed.failed_steps
        assert fake.hits("/fhir/Patient") == 1
        record = runs.get(world.env.db, allowed.run_id)
        assert record is not None and record.status == "completed"
