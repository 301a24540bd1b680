"""The ``connections`` dynamic partitions: one partition per connection id, managed by the connections sensor."""

from __future__ import annotations

from typing import Final

from dagster import DynamicPartitionsDefinition

__all__ = ["CONNECTIONS_PARTITIONS_NAME", "connections_partitions"]

CONNECTIONS_PARTITIONS_NAME: Final = "connections"
connections_partitions = DynamicPartitionsDefinition(name=CONNECTIONS_PARTITIONS_NAME)
