"""How many threads ehrsync's own work may take on this machine."""

from __future__ import annotations

import os

__all__ = ["threads_beside", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports it (a container's cpuset), else
    the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def threads_beside(landing_slots: int) -> int:
    """DuckDB threads of a sync step's warehouse connection when EHRSYNC_DUCKDB_THREADS is unset: the cores the
    Bulk landing threads leave, at least one. A merge statement covers one landed file; on 2 cores a second DuckDB
    thread beside two landing threads cost ~3 s of CPU per 10,000-patient export and bought no time
    (docs/PERFORMANCE.md, fifth session). Steps without landing threads get the same: their merges are small."""
    return max(1, usable_cores() - landing_slots)
