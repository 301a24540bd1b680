"""Run tags: every ehrsync run says which connection, tenant and EHR source it serves, and what kind it is.

The UI filters on them, and ``dagster.yaml`` limits concurrent runs per ``ehrsync/source`` so a busy
clinic's EHR is not hammered by many patients' syncs at once, and per ``ehrsync/export_slot`` (only on Bulk runs of
a vendor that runs one export per client and tenant: ``engine.export_slots``) to one. Partition keys are bare
connection ids (Dagster has no display name for a dynamic partition key, and a patient's name would be PHI), so
these tags are how a person finds a connection's runs: the tenant's name (a practice, not a patient), the
provider, the kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from engine.connection_snapshots import ConnectionSnapshot

__all__ = [
    "CONNECTION_TAG",
    "EXPORT_SLOT_TAG",
    "KIND_TAG",
    "SOURCE_TAG",
    "TENANT_NAME_TAG",
    "TENANT_TAG",
    "TRIGGER_TAG",
    "connection_run_tags",
    "run_tags",
]

CONNECTION_TAG: Final = "ehrsync/connection"
TENANT_TAG: Final = "ehrsync/tenant"
TENANT_NAME_TAG: Final = "ehrsync/tenant_name"
SOURCE_TAG: Final = "ehrsync/source"
KIND_TAG: Final = "ehrsync/kind"
TRIGGER_TAG: Final = "ehrsync/trigger"
EXPORT_SLOT_TAG: Final = "ehrsync/export_slot"
# Tag values are shown in one line of the UI; a longer tenant name is cut (it only helps a person read).
_MAX_TAG_VALUE = 100


def run_tags(
    *,
    connection_id: str,
    tenant_id: str,
    source: str,
    trigger: str,
    tenant_name: str = "",
    kind: str = "",
    export_slot: str = "",
) -> dict[str, str]:
    """The tags for a run of one connection; ``trigger`` says who asked (first-sync, schedule, manual...).

    ``tenant_name``, ``kind`` and ``export_slot`` are added when known (empty: left out)."""
    tags = {
        CONNECTION_TAG: connection_id,
        TENANT_TAG: tenant_id,
        SOURCE_TAG: source,
        TRIGGER_TAG: trigger,
    }
    if tenant_name.strip():
        tags[TENANT_NAME_TAG] = " ".join(tenant_name.split())[:_MAX_TAG_VALUE]
    if kind:
        tags[KIND_TAG] = kind
    if export_slot:
        tags[EXPORT_SLOT_TAG] = export_slot
    return tags


def connection_run_tags(conn: ConnectionSnapshot, trigger: str) -> dict[str, str]:
    """``run_tags`` of a connection as the sensors and ``run_sync_now`` read it from the app database."""
    return run_tags(
        connection_id=conn.id,
        tenant_id=conn.tenant_id,
        source=conn.provider_id,
        trigger=trigger,
        tenant_name=conn.tenant_name,
        kind=conn.kind,
        export_slot=conn.export_slot or "",
    )
