"""How many threads ehrsync's own work may take on this machine."""

from __future__ import annotations

from warehouse.machine import usable_cores

__all__ = ["landing_slots", "threads_beside", "usable_cores"]


def threads_beside(landing_slots: int) -> int:
    """DuckDB threads of a sync step's warehouse connection when EHRSYNC_DUCKDB_THREADS is unset: the cores the
    Bulk landing threads leave, at least one. A merge statement covers one landed file; on 2 cores a second DuckDB
    thread beside two landing threads cost ~3 s of CPU per 10,000-patient export and bought no time
    (docs/PERFORMANCE.md, fifth session). Steps without landing threads get the same: their merges are small."""
    return max(1, usable_cores() - landing_slots)


def landing_slots() -> int:
    """Bulk files landed at a time by default: the cores less one for the merge thread, at most two.

    On 2 cores one landing thread beside the merge took 10.2-10.4 s after the manifest of a 10,000-patient export
    against 11.7-12.4 s with two, with ~2 s less CPU and ~10 MB less peak (docs/PERFORMANCE.md, seventh session):
    two landing threads contend for the GIL over their per-line Python work, and the merge wants the other core.
    Machines with more cores were not measured here; they keep the earlier default of two."""
    return min(2, max(1, usable_cores() - 1))
