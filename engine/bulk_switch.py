"""The tenant's opt-in to Bulk ``$export``: ``practice_settings.ehrIntegrations.enableBulkExport``.

A Bulk export copies every patient of a group (or the whole system) at once, so it needs the tenant's own yes, as
the write-back needs ``enableWrite``. The auth service's sync API checked it and every other way to start one
(the scheduled syncs, ``ehrsync sync``, materializing the asset in the Dagster UI) did not; every way runs
``engine.bulk_export.run_bulk_export``, which asks here before its first request to the EHR (no token, no
CapabilityStatement, no kick-off, no poll of an export already kicked off).
The switch is read by the one rule of ``connectors.tenant_switches``: on only when stored ``true``; left out or
``false``: off; anything else neither on nor off, a ``tenant_setting_invalid`` refusal naming it. A connection
whose tenant has no row is refused as the sync API refuses it: nobody said yes.
"""

from __future__ import annotations

from connectors.errors import ConfigurationError
from connectors.tenant_switches import read_switch
from engine.errors import BulkExportNotEnabledError, TenantSettingInvalidError
from store import AppDatabase
from store.models import Tenant

__all__ = ["BULK_SWITCH", "bulk_refusal"]

BULK_SWITCH = "enableBulkExport"
_WHERE = f"practice_settings.ehrIntegrations.{BULK_SWITCH}"
_FIX = f"set {_WHERE} to true in the tenant's seed file and run `ehrsync auth seed FILE`"


def bulk_refusal(db: AppDatabase, connection_id: str, tenant_id: str | None) -> ConfigurationError | None:
    """Why no Bulk export may start for the connection of ``tenant_id`` now (None: its tenant's switch is
    ``true``), read as it is now: a switch turned off since the last run counts. The refusal says that nothing was
    sent and how to allow it. A leaf of the engine (no connectors beyond the switch rule): ``ehrsync sync`` asks
    it before it loads Dagster."""
    with db.session() as session:
        tenant = session.get(Tenant, tenant_id) if tenant_id else None
        stored = None if tenant is None else (tenant.settings or {})
    if stored is None:
        return BulkExportNotEnabledError(
            f"Bulk export refused: connection {connection_id}'s tenant {tenant_id!r} has no row in the app database,"
            f" so nobody turned {_WHERE} on; nothing was sent to the EHR. To allow it, {_FIX}"
        )
    switch = read_switch(stored, BULK_SWITCH)
    if switch.problem is not None:
        return TenantSettingInvalidError(
            f"Bulk export neither allowed nor refused: the tenant's {switch.problem}; nothing was sent to the EHR."
            f" Fix the setting: {_FIX} (or false to keep Bulk export off)"
        )
    if not switch.on:
        return BulkExportNotEnabledError(
            f"Bulk export is off for tenant {tenant_id} ({_WHERE} is not true); nothing was sent to the EHR."
            f" To allow it, {_FIX}"
        )
    return None
