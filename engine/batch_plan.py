"""Grouping the due patient syncs into batch runs: one run per EHR source and batch of at most N connections.

Pure, like ``engine.planning``: the scheduling sensor plans the due runs (``plan_due_runs``), drops the busy
ones, then asks :func:`plan_batches` how to request them. A batch's run key is a digest of its members' own run
keys (each names its slot or its failure), so a repeated tick asks for the same batch again and Dagster skips it;
a member already in a queued or running batch is busy and is not planned twice. A batch of one is requested as
the connection's own partitioned run, exactly as before batches existed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from engine.planning import DueRun

__all__ = ["DueBatch", "batch_run_key", "plan_batches"]


@dataclass(frozen=True)
class DueBatch:
    """Due runs of one EHR source requested as one run (``members`` sorted by connection id)."""

    source: str
    members: tuple[DueRun, ...]
    run_key: str

    @property
    def connection_ids(self) -> list[str]:
        return [d.connection.id for d in self.members]

    @property
    def retries(self) -> int:
        return sum(1 for d in self.members if d.retry)


def batch_run_key(source: str, members: Sequence[DueRun]) -> str:
    """``batch:<source>:<n>:<digest of the members' run keys>``: stable for one set of due slots."""
    digest = hashlib.sha256("\n".join(sorted(d.run_key for d in members)).encode()).hexdigest()[:24]
    return f"batch:{source}:{len(members)}:{digest}"


def plan_batches(due: Sequence[DueRun], size: int) -> tuple[list[DueRun], list[DueBatch]]:
    """(runs requested alone, batches): Bulk connections and batches of one run alone; patient connections of
    one source share runs of at most ``size`` members."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    alone = [d for d in due if d.connection.is_bulk]
    patients = sorted(
        (d for d in due if not d.connection.is_bulk), key=lambda d: (d.connection.provider_id, d.connection.id)
    )
    batches: list[DueBatch] = []
    for source, group in groupby(patients, key=lambda d: d.connection.provider_id):
        members = list(group)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) == 1:
                alone.append(chunk[0])
            else:
                batches.append(DueBatch(source, tuple(chunk), batch_run_key(source, chunk)))
    return alone, batches
