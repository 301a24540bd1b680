"""The ``connections`` partitions follow the app database: no one has to touch Dagster."""

from pipelines.defs.connections.sensors import defs

__all__ = ["defs"]
