"""Typed errors of the Dagster layer; they join the shared hierarchy so callers catch one base.

Connection lookups reuse the engine's ``pipelines.sync.errors`` (``ConnectionNotFoundError``,
``ConnectionNotSyncableError``) so a caller of either layer catches the same classes.
"""

from __future__ import annotations

from connectors.errors import ConfigurationError, EhrSyncError

__all__ = ["PipelineConfigurationError", "PipelineRunError"]


class PipelineConfigurationError(ConfigurationError):
    """An environment variable or setting of the Dagster layer is malformed (the message names it)."""

    code = "pipeline_configuration_error"


class PipelineRunError(EhrSyncError):
    """A run started on request (``ehrsync sync``, the demo) failed; details are in the run's logs and UI."""

    code = "pipeline_run_failed"
