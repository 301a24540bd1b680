"""The code location ``workspace.yaml`` loads: every domain's ``Definitions`` merged, plus the resources.

Each domain module (``pipelines/defs/*.py``) builds its own ``Definitions``; adding a domain means adding a
module and one name below. Resources are configured from the environment (see ``pipelines.settings``; the
retry backoff of failed syncs from ``EHRSYNC_RETRY_BASE_SECONDS``/``EHRSYNC_RETRY_CAP_SECONDS``, see
``pipelines.retries``).
"""

from collections.abc import Mapping

from dagster import Definitions

from pipelines.defs import bulk, connections, keepalive, maintenance, schedules, sync
from pipelines.resources import default_resources
from pipelines.retries import RetryPolicyResource
from pipelines.settings import PipelineSettings

__all__ = ["build_definitions", "defs"]


def build_definitions(settings: PipelineSettings | None = None, env: Mapping[str, str] | None = None) -> Definitions:
    """All of ehrsync's Dagster definitions bound to resources for ``settings`` (default: the environment)."""
    resolved = settings or PipelineSettings.from_env(env)
    return Definitions.merge(
        sync.defs,
        bulk.defs,
        connections.defs,
        schedules.defs,
        maintenance.defs,
        keepalive.defs,
        Definitions(resources={**default_resources(resolved), "retry": RetryPolicyResource.from_env(env)}),
    )


defs = build_definitions()
