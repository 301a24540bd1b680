"""Export slots: a vendor that runs one Bulk export at a time per client and tenant (Oracle Health, vendors.md §3;
``ProviderPlugin.one_export_per_client``) answers a second concurrent kick-off 429 ``throttled``.

Connections of one client id at one FHIR base (the tenant is in Oracle's base) share a slot. Their runs carry the
slot as the ``ehrsync/export_slot`` run tag, which dagster.yaml limits to one run at once, so the daemon's queue
never starts two of them together. Runs started outside that queue (``ehrsync sync`` in-process) are checked at
kick-off instead: an export of the same slot still ``polling`` (running on the EHR) makes this one stop before
asking, with BulkExportBusyError naming it. Other vendors have no slot: neither tag nor check.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select

from connectors.errors import BulkExportBusyError, ConfigurationError
from connectors.providers import get_provider
from engine.models import BulkJob, utcnow
from store import AppDatabase
from store.models import Connection

__all__ = ["export_slot", "require_free_slot"]


def export_slot(provider_id: str, client_id: str | None, fhir_base: str) -> str | None:
    """The slot's run tag value, ``<provider>-<16 hex>`` (a hash: a client id may be a multi-KB JWT and a base URL
    holds characters a tag value may not), or None when the vendor allows concurrent exports."""
    try:
        one_at_a_time = get_provider(provider_id).one_export_per_client
    except ConfigurationError:  # an unknown provider fails where it is used, naming the known ones
        return None
    if not one_at_a_time:
        return None
    digest = hashlib.sha256(f"{client_id or ''}\n{fhir_base.rstrip('/')}".encode()).hexdigest()[:16]
    return f"{provider_id}-{digest}"


def _spellings(fhir_base: str) -> tuple[str, str]:
    """The base with and without its trailing slash: one slot, as ``export_slot`` hashes it (a base is stored as
    configured, so two connections of one tenant may spell it either way)."""
    bare = fhir_base.rstrip("/")
    return bare, bare + "/"


def require_free_slot(
    db: AppDatabase, connection_id: str, provider_id: str, client_id: str | None, fhir_base: str, deadline_s: float
) -> None:
    """Raise BulkExportBusyError when another active connection of the slot has an export still polling that is
    younger than the job deadline (an older one is past being waited for: ``bulk_deadline_s``, 24 h from its
    kick-off)."""
    if export_slot(provider_id, client_id, fhir_base) is None:
        return
    since = utcnow() - timedelta(seconds=deadline_s)
    with db.session() as session:
        busy = session.execute(
            select(BulkJob.id, BulkJob.connection_id)
            .join(Connection, Connection.id == BulkJob.connection_id)
            .where(
                Connection.provider_id == provider_id,
                Connection.client_id == (client_id or ""),
                Connection.fhir_base.in_(_spellings(fhir_base)),
                Connection.status == "active",
                BulkJob.connection_id != connection_id,
                BulkJob.status == "polling",
                BulkJob.requested_at > since,
            )
            .limit(1)
        ).first()
    if busy is not None:
        raise BulkExportBusyError(
            f"no export was started: connection {busy.connection_id} of the same client and FHIR base has export "
            f"{busy.id} in progress, and {provider_id} runs one export per client and tenant at a time (a second "
            "kick-off would be answered 429); _since is unchanged and a later run exports"
        )
