"""Two dynamic partition sets, one key per connection id, managed by the connections sensor.

Patient connections (REST sync: the per-type ``landing/`` and ``warehouse/`` assets) and bulk connections
(backend/group ``$export``: ``bulk/export``) live in separate sets, so a per-type asset never lists a bulk
connection as "missing" and "Materialize missing" never launches a job for the wrong kind of connection.
Before issue 12 one set, ``connections``, held both; the connections sensor moves its keys into the right set
(``LEGACY_CONNECTIONS_PARTITIONS_NAME``). The keys stay connection ids: Dagster has no display name for a
dynamic partition key, and a readable key would put a person's name (PHI) into Dagster's storage.
"""

from __future__ import annotations

from typing import Final

from dagster import DagsterInstance, DynamicPartitionsDefinition

from engine.planning import PartitionSets

__all__ = [
    "BULK_CONNECTIONS_PARTITIONS_NAME",
    "LEGACY_CONNECTIONS_PARTITIONS_NAME",
    "PATIENT_CONNECTIONS_PARTITIONS_NAME",
    "bulk_connections_partitions",
    "partition_sets",
    "partitions_name_for",
    "patient_connections_partitions",
]

PATIENT_CONNECTIONS_PARTITIONS_NAME: Final = "patient_connections"
BULK_CONNECTIONS_PARTITIONS_NAME: Final = "bulk_connections"
# The one set of before issue 12: read (and emptied) by the connections sensor only, never a definition's set.
LEGACY_CONNECTIONS_PARTITIONS_NAME: Final = "connections"

patient_connections_partitions = DynamicPartitionsDefinition(name=PATIENT_CONNECTIONS_PARTITIONS_NAME)
bulk_connections_partitions = DynamicPartitionsDefinition(name=BULK_CONNECTIONS_PARTITIONS_NAME)


def partitions_name_for(*, is_bulk: bool) -> str:
    """The set a connection's key belongs in: bulk (backend/group) or patient."""
    return BULK_CONNECTIONS_PARTITIONS_NAME if is_bulk else PATIENT_CONNECTIONS_PARTITIONS_NAME


def partition_sets(instance: DagsterInstance) -> PartitionSets:
    """The keys of the three sets on ``instance`` (three indexed reads)."""
    return PartitionSets(
        patient=frozenset(instance.get_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME)),
        bulk=frozenset(instance.get_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME)),
        legacy=frozenset(instance.get_dynamic_partitions(LEGACY_CONNECTIONS_PARTITIONS_NAME)),
    )
