"""Incremental REST sync of patient connections: the per-type assets, their jobs and run bookkeeping."""

from pipelines.defs.sync.jobs import defs

__all__ = ["defs"]
