"""Typed errors of the sync engine (they cross into the Dagster layer, so they join the shared hierarchy)."""

from __future__ import annotations

from connectors.errors import ConfigurationError, EhrSyncError
from connectors.errors import TenantSettingInvalidError as TenantSettingInvalidError  # the auth service's too


class SyncError(EhrSyncError):
    """A sync could not run as asked (bad connection, bad arguments, inconsistent state)."""

    code = "sync_error"


class ConnectionNotFoundError(SyncError):
    code = "connection_not_found"


class ConnectionNotSyncableError(SyncError):
    """The connection exists but may not sync now (needs_reauth, disabled, wrong kind for the operation)."""

    code = "connection_not_syncable"


class NothingLandedError(SyncError):
    """``upsert_resource_type`` found no landing of that run waiting for it."""

    code = "nothing_landed"


class HandoffError(SyncError):
    """A stored landing handoff is of an unknown version or malformed (the message names the field)."""

    code = "landing_handoff_invalid"


class PipelineConfigurationError(ConfigurationError):
    """An environment variable or setting of the Dagster layer is malformed (the message names it)."""

    code = "pipeline_configuration_error"


class PipelineRunError(EhrSyncError):
    """A run started on request (``ehrsync sync``, the demo) failed; details are in the run's logs and UI."""

    code = "pipeline_run_failed"


class BulkExportNotEnabledError(ConfigurationError):
    """The connection's tenant has not turned on ``ehrIntegrations.enableBulkExport`` (or has no row): no Bulk
    export starts, whatever asked for it (the scheduler, ``ehrsync sync``, the Dagster UI, the sync API)."""

    code = "bulk_not_enabled"
