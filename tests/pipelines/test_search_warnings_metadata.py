"""A searchset that stops early shows in the Dagster materialization (issue 10): ``warnings`` says what
happened and how it was recovered; ``incomplete`` says the mark was held back."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
from dagster import DagsterEventType, DagsterInstance

from ehrsync.run_now import run_sync_now
from engine import cursors
from engine.settings import PipelineSettings
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient


def test_early_stop_warnings_and_incomplete_reach_the_materialization(
    tmp_path: Path, http: httpx.Client, world: SyncWorld
) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    with SandboxServer(SandboxConfig(patients=1, seed=5, max_count=3)) as sb, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, sb, http=http)
        sb.admin.set_fault("search_no_next", path="/fhir/Observation", times=None)  # every multi-page search
        sb.admin.set_fault("search_no_next", path="/fhir/Condition", times=1)  # once: recovered in the run
        result = run_sync_now(cid, settings=settings, instance=instance)
        observations = result.materializations["landing/Observation"]
        assert observations["incomplete"] is True
        assert any(w.startswith("not recovered") for w in observations["warnings"])
        # what arrived is stored, then the upsert step fails: the run does not read as a clean success
        assert not result.success and "warehouse__Observation" in result.failed_steps, result.failed_steps
        assert "landing__Observation" not in result.failed_steps
        failures = [
            e.dagster_event.event_specific_data.error.to_string()  # type: ignore[union-attr]
            for e in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_FAILURE)
        ]
        assert any("upsert of Observation failed: search_incomplete" in f for f in failures), failures
        assert cursors.get_mark(world.env.db, cid, cursors.REST_STREAM, "Observation") is None  # mark held back
        conditions = result.materializations["landing/Condition"]
        assert conditions["incomplete"] is False
        assert any(w.startswith("recovered") for w in conditions["warnings"])
        assert "incomplete" not in result.materializations["landing/Patient"]  # quiet when nothing happened
        logs = instance.all_logs(result.run_id)
        logged = [e.message for e in logs if e.dagster_event is None and e.level in (logging.WARNING, "WARNING")]
        assert any("Observation: not recovered" in m for m in logged)
