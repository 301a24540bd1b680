"""An unreachable EHR through Dagster (issue 10): the first landing step finds the host refusing connections
and fails naming the URL; every other type's step fails at once, instead of each retrying for minutes: the first
noted the source held (``engine.run_holds``), so they do not try it again."""

from __future__ import annotations

import time
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance

from connectors.budgets import forget_unreachable
from ehrsync.run_now import run_sync_now
from engine.settings import PipelineSettings
from tests.engine.helpers import SyncWorld, connect_static


def test_unreachable_ehr_fails_every_landing_step_within_seconds(
    refused_port: int, tmp_path: Path, world: SyncWorld
) -> None:
    base = f"http://127.0.0.1:{refused_port}"
    cid = connect_static(world, f"{base}/fhir", patient_id="p1")
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    started = time.monotonic()
    with DagsterInstance.ephemeral() as instance:
        try:
            result = run_sync_now(cid, settings=settings, instance=instance)
        finally:
            forget_unreachable(base)
        elapsed = time.monotonic() - started
        assert not result.success
        landing = [s for s in result.failed_steps if s.startswith("landing__")]
        assert len(landing) > 5, result.failed_steps
        failures = [
            e.dagster_event.event_specific_data.error.to_string()  # type: ignore[union-attr]
            for e in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_FAILURE)
        ]
    assert elapsed < 60, f"took {elapsed:.0f} s"  # before: every type retried a refused connection for ~30 s
    assert sum(f"cannot reach the EHR at {base}" in message for message in failures) == 1, failures
    assert sum("not tried: its source is held until" in message for message in failures) == len(failures) - 1
