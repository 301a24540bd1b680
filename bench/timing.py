"""Timing helpers shared by the micro-benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["least_cpu_s"]


def least_cpu_s(work: Callable[[], object], repeat: int) -> float:
    """The least CPU time of ``repeat`` runs of ``work`` (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best
