"""Scheduled incremental syncs, each connection at its own frequency and its source's window, and retries."""

from pipelines.defs.scheduling.sensors import defs

__all__ = ["defs"]
