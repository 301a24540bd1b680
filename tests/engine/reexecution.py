"""Dagster's "re-execute from failure" (and "re-execute all") of a sync run, in-process: the job is
reconstructable from this module.

A re-execution needs a ``ReconstructableJob`` (Dagster rebuilds the job by name); the in-process executor builds
it in this very process, so :func:`sync_job` hands back the job :func:`bind` stored: production's definitions
with a test world's resources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.storage.tags import RESUME_RETRY_TAG, RETRY_NUMBER_TAG, TAGS_TO_MAYBE_OMIT_ON_RETRY

from engine.settings import PipelineSettings
from pipelines.definitions import domain_definitions
from pipelines.resources import default_resources

_BOUND: dict[str, JobDefinition] = {}


def bind(settings: PipelineSettings, resources: Mapping[str, object], job_name: str) -> None:
    """Bind the world's resources to production's ``job_name`` for :func:`sync_job` to return."""
    defs = Definitions.merge(
        *domain_definitions(settings), Definitions(resources={**default_resources(settings), **resources})
    )
    _BOUND["job"] = defs.resolve_job_def(job_name)
    # Dagster keeps the last job it reconstructed (``lru_cache`` on an equal ReconstructableJob): without this a
    # test's run would execute the previous test's job, bound to that test's world.
    ReconstructableJob.get_definition.cache_clear()
    ReconstructableJob.get_repository_definition.cache_clear()


def sync_job() -> JobDefinition:
    return _BOUND["job"]


def run(
    instance: DagsterInstance,
    partition: str,
    assets: Sequence[AssetKey] | None = None,
    *,
    from_failure_of: str | None = None,
) -> tuple[str, list[str]]:
    """A run of the bound job for ``partition`` (``assets`` only), or the re-execution from failure of a run, as
    the UI starts it (same partition): (its run id, the messages of its failed steps)."""
    if from_failure_of:
        return reexecute(instance, from_failure_of, from_failure=True)
    return launch(instance, {"dagster/partition": partition}, assets=assets)


def launch(
    instance: DagsterInstance,
    tags: Mapping[str, str],
    *,
    run_config: Mapping[str, Any] | None = None,
    assets: Sequence[AssetKey] | None = None,
) -> tuple[str, list[str]]:
    """A first run of the bound job: (its run id, the messages of its failed steps)."""
    with execute_job(
        reconstructable(sync_job),
        instance,
        tags=dict(tags),
        run_config=dict(run_config or {}),
        asset_selection=list(assets) if assets else None,
        raise_on_error=False,
    ) as result:
        return result.run_id, _failures(result)


def reexecute(
    instance: DagsterInstance, parent_id: str, *, from_failure: bool, retry_number: int | None = None
) -> tuple[str, list[str]]:
    """Re-execute a run as the UI's "Re-execute from failure" / "Re-execute all" start it
    (``create_reexecuted_run`` with the parent's tags, less those Dagster omits on a retry, the resume tag on a
    re-execution from failure, and the parent's run config): (its run id, the messages of its failed steps).
    ``retry_number``: as the run-retry daemon starts its n-th automatic retry instead (the same, plus that tag)."""
    parent = instance.get_run_by_id(parent_id)
    assert parent is not None
    tags = {k: v for k, v in parent.tags.items() if k not in TAGS_TO_MAYBE_OMIT_ON_RETRY}
    if from_failure:
        tags[RESUME_RETRY_TAG] = "true"
    if retry_number is not None:
        tags[RETRY_NUMBER_TAG] = str(retry_number)
    options = ReexecutionOptions.from_failure(parent_id, instance) if from_failure else ReexecutionOptions(parent_id)
    with execute_job(
        reconstructable(sync_job),
        instance,
        tags=tags,
        run_config=dict(parent.run_config),
        reexecution_options=options,
        raise_on_error=False,
    ) as result:
        return result.run_id, _failures(result)


def _failures(result: JobExecutionResult) -> list[str]:
    return [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]  # type: ignore[union-attr]
