"""The connection a step serves: checked against the partition set it ran in, and shown as metadata.

Partition keys are bare connection ids; each materialization also names the tenant (a practice, never a
patient), the EHR source and the connection kind, so the UI tells a person whose data it is. A key that
reached the wrong set (added by hand in the UI, say) fails the step before any EHR is contacted.
"""

from __future__ import annotations

from dagster import Failure, MetadataValue

from engine.connection_snapshots import ConnectionSnapshot, read_connection
from engine.errors import ConnectionNotFoundError
from pipelines.defs._shared.partitions import partitions_name_for
from store import AppDatabase

__all__ = ["WrongPartitionSetError", "connection_metadata", "step_connection"]


class WrongPartitionSetError(Failure):
    """A step ran for a connection of the other kind (a bulk connection in a per-type asset, or the reverse)."""


def step_connection(db: AppDatabase, connection_id: str, *, bulk: bool) -> ConnectionSnapshot:
    """The connection of this partition; ``WrongPartitionSetError`` when its kind belongs to the other set."""
    try:
        conn = read_connection(db, connection_id)
    except ConnectionNotFoundError as exc:
        raise Failure(description=f"partition {connection_id}: {exc}") from None
    if conn.is_bulk != bulk:
        right = partitions_name_for(is_bulk=conn.is_bulk)
        wrong = partitions_name_for(is_bulk=bulk)
        raise WrongPartitionSetError(
            description=f"connection {connection_id} is a {conn.kind} connection: its partition belongs to "
            f"{right}, not {wrong}; nothing was fetched"
        )
    return conn


def connection_metadata(conn: ConnectionSnapshot) -> dict[str, MetadataValue]:
    """Who the partition is, for a person reading the materialization (no patient data)."""
    return {
        "connection": MetadataValue.text(conn.id),
        "tenant": MetadataValue.text(conn.tenant_id),
        "tenant_name": MetadataValue.text(conn.tenant_name),
        "source": MetadataValue.text(conn.provider_id),
        "connection_kind": MetadataValue.text(conn.kind),
    }
