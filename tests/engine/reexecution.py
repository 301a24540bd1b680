"""Dagster's "re-execute from failure" of a sync run, in-process: the job is reconstructable from this module.

A re-execution needs a ``ReconstructableJob`` (Dagster rebuilds the job by name); the in-process executor builds
it in this very process, so :func:`sync_job` hands back the job :func:`bind` stored: production's definitions
with a test world's resources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)

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
    options = ReexecutionOptions.from_failure(from_failure_of, instance) if from_failure_of else None
    with execute_job(
        reconstructable(sync_job),
        instance,
        tags={"dagster/partition": partition},
        asset_selection=None if options else list(assets) if assets else None,
        reexecution_options=options,
        raise_on_error=False,
    ) as result:
        failures = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]  # type: ignore[union-attr]
        return result.run_id, failures
