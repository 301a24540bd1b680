"""The code location ``workspace.yaml`` loads: every domain's ``Definitions`` merged, plus the resources.

Each domain module (``pipelines/defs/*.py``) builds its own ``Definitions``; adding a domain means adding a
module and one name below. Resources are configured from the environment (see ``pipelines.settings``).
"""

from dagster import Definitions

from pipelines.defs import bulk, connections, keepalive, maintenance, schedules, sync
from pipelines.resources import default_resources
from pipelines.settings import PipelineSettings

__all__ = ["build_definitions", "defs"]


def build_definitions(settings: PipelineSettings | None = None) -> Definitions:
    """All of ehrsync's Dagster definitions bound to resources for ``settings`` (default: the environment)."""
    resolved = settings or PipelineSettings.from_env()
    return Definitions.merge(
        sync.defs,
        bulk.defs,
        connections.defs,
        schedules.defs,
        maintenance.defs,
        keepalive.defs,
        Definitions(resources=default_resources(resolved)),
    )


defs = build_definitions()
