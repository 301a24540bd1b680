"""``EHRSYNC_SYNC_BATCH_SIZE``: how many scheduled patient syncs of one EHR source share one Dagster run.

A run costs seconds of fixed work; an incremental sync with nothing changed a fraction of one (issue 14). The
scheduling sensor requests one run per source and batch of at most this many connections (1: a run each).
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.env_numbers import whole_number

__all__ = ["BATCH_SIZE_ENV", "DEFAULT_BATCH_SIZE", "MAX_BATCH_SIZE", "batch_size_from_env"]

BATCH_SIZE_ENV = "EHRSYNC_SYNC_BATCH_SIZE"
DEFAULT_BATCH_SIZE = 50
MAX_BATCH_SIZE = 1000


def batch_size_from_env(env: Mapping[str, str]) -> int:
    """The configured batch size; a value that is not a whole number from 1 to 1000 names the variable."""
    return whole_number(env, BATCH_SIZE_ENV, DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE, "connections per batch run")
