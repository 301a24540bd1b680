"""Which connections are overdue for their schedule? A pure rule, tested as a table; the freshness checks
(``pipelines/defs/freshness``) apply it to every active connection.

A connection is overdue when its last completed sync (or its creation, if it never completed one) is older
than its period (``sync_frequency_hours``, clamped like the scheduler's), plus the operator's grace, plus,
for a source with a sync window, the part of the day that window is closed (a due sync may wait that long
for the window to open). Connections that cannot sync (needs_reauth, disabled) are not scheduled, so they are
not overdue here; they are counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from engine.env_numbers import whole_number
from engine.scheduling import effective_frequency
from engine.sync_windows import SyncWindow

if TYPE_CHECKING:  # the settings read the grace without loading the app database's models (issue 14)
    from engine.connection_snapshots import ConnectionSnapshot

__all__ = [
    "DEFAULT_GRACE_MINUTES",
    "GRACE_VARIABLE",
    "MAX_GRACE_MINUTES",
    "FreshnessReport",
    "Overdue",
    "closed_span",
    "find_overdue",
    "grace_minutes_from_env",
]

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Overdue:
    """One connection past its deadline, and by how much (no patient data: ids and times only)."""

    connection_id: str
    overdue_by: timedelta
    last_sync_at: datetime | None
    frequency_hours: float


@dataclass(frozen=True)
class FreshnessReport:
    checked: int = 0
    not_syncing: int = 0  # needs_reauth, disabled ...: not scheduled, so never overdue here
    no_patient: int = 0  # patient-kind connections without a patient: never synced by design (notes only)
    overdue: list[Overdue] = field(default_factory=list)

    @property
    def worst(self) -> timedelta:
        return max((o.overdue_by for o in self.overdue), default=timedelta(0))


def closed_span(window: SyncWindow | None) -> timedelta:
    """How long a day the window is closed: the longest a due sync waits for it to open."""
    if window is None:
        return timedelta(0)
    start, end = window.start_minute, window.end_minute
    open_minutes = (end - start) % (24 * 60)
    return _DAY - timedelta(minutes=open_minutes) if start != end else _DAY


def find_overdue(
    now: datetime,
    connections: Iterable[ConnectionSnapshot],
    *,
    grace: timedelta,
    windows: Mapping[str, SyncWindow],
) -> FreshnessReport:
    """The overdue connections among ``connections`` at ``now``, worst first."""
    if now.tzinfo is None:
        raise ValueError("find_overdue needs a timezone-aware 'now'")
    checked = not_syncing = no_patient = 0
    overdue: list[Overdue] = []
    for conn in connections:
        if conn.patientless:
            no_patient += conn.status == "active"
            continue
        if not conn.syncable:
            not_syncing += conn.keeps_partition
            continue
        checked += 1
        reference = conn.last_sync_at or conn.created_at
        if reference is None:
            continue
        period = effective_frequency(conn.sync_frequency_hours)
        late = now.astimezone(UTC) - (reference + period + grace + closed_span(windows.get(conn.provider_id)))
        if late > timedelta(0):
            overdue.append(Overdue(conn.id, late, conn.last_sync_at, period.total_seconds() / 3600))
    overdue.sort(key=lambda o: o.overdue_by, reverse=True)
    return FreshnessReport(checked, not_syncing, no_patient, overdue)


DEFAULT_GRACE_MINUTES = 60
MAX_GRACE_MINUTES = 7 * 24 * 60
GRACE_VARIABLE = "EHRSYNC_FRESHNESS_GRACE_MINUTES"


def grace_minutes_from_env(env: Mapping[str, str]) -> int:
    """``EHRSYNC_FRESHNESS_GRACE_MINUTES``: slack past a connection's period before it counts as overdue."""
    return whole_number(env, GRACE_VARIABLE, DEFAULT_GRACE_MINUTES, 0, MAX_GRACE_MINUTES, "minutes")
