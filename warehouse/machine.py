"""The cores this process may use: the one count the warehouse's DuckDB default and the engine's thread budget
(``engine.cores``) both start from."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports it (a container's cpuset,
    ``taskset``), else the machine's. DuckDB's own default counts the machine's cores even where the process may
    use fewer."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
