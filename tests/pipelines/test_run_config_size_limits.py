"""A run's config (the launchpad) that sets the landing's resource limit above the response limit the run's requests
keep to is refused before any request, naming both fields and values: the settings refuse that pair of variables at
start, but a run's config set ``landing.max_resource_bytes`` (or ``ehr_http.max_response_bytes``) freely, and a
search page carrying one resource near the resource limit then failed whole (``response_too_large``) mid-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient

MIB = 1024 * 1024


def _step_errors(result: ExecuteInProcessResult) -> list[str]:
    """What each failed step raised (Dagster wraps it: its cause is the step's own exception)."""
    errors = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            assert error is not None
            errors.append((error.cause or error).message.strip())
    return errors


def _run(settings: PipelineSettings, cid: str, instance: DagsterInstance, **resources: Any) -> ExecuteInProcessResult:
    """The production ``incremental_sync`` job, in-process, landing Patient only, with ``resources`` as run config."""
    job = build_definitions(settings).resolve_job_def("incremental_sync")
    return job.execute_in_process(
        partition_key=cid,
        instance=instance,
        asset_selection=[AssetKey(["landing", "Patient"])],
        run_config={"resources": {name: {"config": config} for name, config in resources.items()}},
        raise_on_error=False,
    )


@pytest.mark.parametrize(
    ("resources", "said"),
    [
        (  # the landing's limit raised above the response limit the settings gave ehr_http
            {"landing": {"max_resource_bytes": 128 * MIB}},
            f"landing.max_resource_bytes={128 * MIB} is above ehr_http.max_response_bytes={64 * MIB}",
        ),
        (  # the response limit lowered below the landing's limit
            {"ehr_http": {"max_response_bytes": MIB, "request_deadline_s": 60.0}},
            f"landing.max_resource_bytes={64 * MIB} is above ehr_http.max_response_bytes={MIB}",
        ),
        (  # the response limit alone (no request deadline): it was ignored, the variable's limit in force
            {"ehr_http": {"max_response_bytes": MIB}},
            f"landing.max_resource_bytes={64 * MIB} is above ehr_http.max_response_bytes={MIB}",
        ),
        (  # ehr_http configured without a response limit: the variable's (its default) is the one in force
            {"landing": {"max_resource_bytes": 128 * MIB}, "ehr_http": {"rate_limits": False}},
            f"landing.max_resource_bytes={128 * MIB} is above EHRSYNC_MAX_RESPONSE_BYTES={64 * MIB}",
        ),
    ],
)
def test_a_resource_limit_above_the_response_limit_is_refused_before_any_request(
    tmp_path: Path, http: httpx.Client, world: SyncWorld, resources: dict[str, dict[str, Any]], said: str
) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    landing_dirs = {"root": str(settings.landing_dir), "attachments_root": str(settings.attachments_dir)}
    if "landing" in resources:
        resources = {**resources, "landing": {**landing_dirs, **resources["landing"]}}
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as ehr, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, ehr, http=http)
        instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid])
        tripwires = sorted([urlsplit(ehr.fhir_base).path, "/oauth"])  # a search or a token refresh spends one
        for path in tripwires:
            http.post(f"{ehr.base_url}/admin/faults", json={"kind": "500", "path": path}).raise_for_status()
        refused = _run(settings, cid, instance, **resources)
        armed = sorted(f["path"] for f in http.get(f"{ehr.base_url}/admin/faults").json() if f.get("kind") == "500")
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()
        assert armed == tripwires, "no request reached the EHR"
        assert not refused.success
        errors = _step_errors(refused)
        assert len(errors) == 1 and "\n" not in errors[0], errors
        message = errors[0].removeprefix("engine.errors.PipelineConfigurationError: ")
        assert message.startswith(said) and "response_too_large" in message, errors[0]

        # the same run with a resource limit within the response limit lands Patient
        kept = {**landing_dirs, "max_resource_bytes": MIB}
        assert _run(settings, cid, instance, landing=kept).success
