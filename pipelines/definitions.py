"""The code location ``workspace.yaml`` loads: every domain's ``Definitions`` merged, plus the resources.

Each domain is a package under ``pipelines/defs/`` whose ``__init__`` exposes ``defs``; adding a domain means
adding a folder, not editing a list here. This module is a composition root: the settings are read once, when
Dagster loads the location (``defs``), and reach the steps only through the resources.
"""

import importlib
import pkgutil
from collections.abc import Mapping

from dagster import Definitions, definitions

import pipelines.defs
from engine.settings import PipelineSettings
from pipelines.resources import default_resources

__all__ = ["build_definitions", "defs", "domain_definitions"]


def domain_definitions(settings: PipelineSettings | None = None) -> list[Definitions]:
    """``defs`` of every domain package under ``pipelines/defs`` (``_shared`` holds helpers, not a domain), and
    ``configured_defs(settings)`` where a domain has definitions that depend on the settings (a schedule's cron)."""
    found: list[Definitions] = []
    for info in sorted(pkgutil.iter_modules(pipelines.defs.__path__), key=lambda i: i.name):
        if info.ispkg and not info.name.startswith("_"):
            domain = importlib.import_module(f"pipelines.defs.{info.name}")
            found.append(domain.defs)
            if hasattr(domain, "configured_defs"):
                settings = settings or PipelineSettings.from_env()
                found.append(domain.configured_defs(settings))
    return found


def build_definitions(settings: PipelineSettings | None = None, env: Mapping[str, str] | None = None) -> Definitions:
    """All of ehrsync's Dagster definitions bound to resources for ``settings`` (default: the environment)."""
    resolved = settings or PipelineSettings.from_env(env)
    return Definitions.merge(*domain_definitions(resolved), Definitions(resources=default_resources(resolved)))


@definitions
def defs() -> Definitions:
    """What Dagster loads: built when the code location loads, not when this module is imported."""
    return build_definitions()
