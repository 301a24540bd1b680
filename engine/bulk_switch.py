"""The tenant's opt-in to Bulk ``$export``: ``practice_settings.ehrIntegrations.enableBulkExport``.

A Bulk export copies every patient of a group (or the whole system) at once, so it needs the tenant's own yes, as
the write-back needs ``enableWrite``. The auth service's sync API checked it and every other way to start one
(the scheduled syncs, ``ehrsync sync``, materializing the asset in the Dagster UI) did not; every way runs
``engine.bulk_export.run_bulk_export``, which asks here before its first request to the EHR (no token, no
CapabilityStatement, no kick-off, no poll of an export already kicked off).
The switch is read by the one rule of ``connectors.tenant_switches``: on only when stored ``true``; left out or
``false``: off; anything else neither on nor off, a ``tenant_setting_invalid`` refusal naming it. A connection
whose tenant has no row is refused as the sync API refuses it: nobody said yes. The scheduler asks ``bulk_refusals``
(one query for every due Bulk connection's tenant) so that it requests no run it knows is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from connectors.errors import ConfigurationError
from connectors.tenant_switches import read_switch
from engine.errors import BulkExportNotEnabledError, TenantSettingInvalidError
from store import AppDatabase
from store.tenant_settings import NOT_JSON, stored_settings

__all__ = ["BULK_SWITCH", "BULK_SWITCH_PATH", "bulk_refusal", "bulk_refusals"]

BULK_SWITCH = "enableBulkExport"
#: Where the switch is stored, as operators and the scheduler's tick name it.
BULK_SWITCH_PATH = _WHERE = f"practice_settings.ehrIntegrations.{BULK_SWITCH}"
_FIX = f"set {_WHERE} to true in the tenant's seed file and run `ehrsync auth seed FILE`"


def bulk_refusal(db: AppDatabase, connection_id: str, tenant_id: str | None) -> ConfigurationError | None:
    """Why no Bulk export may start for the connection of ``tenant_id`` now (None: its tenant's switch is
    ``true``), read as it is now: a switch turned off since the last run counts. The refusal says that nothing was
    sent and how to allow it. A leaf of the engine (no connectors beyond the switch rule): ``ehrsync sync`` asks
    it before it loads Dagster."""
    return bulk_refusals(db, {connection_id: tenant_id}).get(connection_id)


def bulk_refusals(db: AppDatabase, tenants: Mapping[str, str | None]) -> dict[str, ConfigurationError]:
    """``bulk_refusal`` of each connection of ``tenants`` (connection id -> its tenant's id), only the refused ones,
    from one query of their tenants' settings: the scheduler asks every tick for its due Bulk connections (a thousand
    connections are one query, not a thousand)."""
    stored = _stored_settings(db, {t for t in tenants.values() if t})
    refused = {cid: _refusal(cid, tid, stored.get(tid) if tid else None) for cid, tid in tenants.items()}
    return {cid: refusal for cid, refusal in refused.items() if refusal is not None}


def _stored_settings(db: AppDatabase, tenant_ids: Iterable[str]) -> dict[str, object]:
    """Each tenant's ``settings`` (``store.tenant_settings``): one row that is not JSON is that tenant's refusal
    (``NOT_JSON``), never an error that stops the scheduler's tick for every tenant."""
    with db.session() as session:
        return stored_settings(session, tenant_ids)


def _refusal(connection_id: str, tenant_id: str | None, stored: object) -> ConfigurationError | None:
    """The one rule: ``stored`` is the tenant row's ``settings`` (None: no row)."""
    if stored is None:
        return BulkExportNotEnabledError(
            f"Bulk export refused: connection {connection_id}'s tenant {tenant_id!r} has no row in the app database,"
            f" so nobody turned {_WHERE} on; nothing was sent to the EHR. To allow it, {_FIX}"
        )
    if stored is NOT_JSON:
        return TenantSettingInvalidError(
            f"Bulk export neither allowed nor refused: tenant {tenant_id}'s stored settings are not JSON (a hand-edited"
            f" row), so {_WHERE} cannot be read; nothing was sent to the EHR. Fix the row: {_FIX}"
            " (or false to keep Bulk export off)"
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
