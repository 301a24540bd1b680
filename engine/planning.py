"""Pure planning for the two sensors: which partitions to add or remove, which runs to request or stop.

The sensors only read the app database and Dagster's instance, call these functions, and turn the plans
into ``SensorResult`` requests, so every rule here is tested as a table without Dagster.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from engine.connection_snapshots import NO_PATIENT, ConnectionSnapshot
from engine.scheduling import (
    DueDecision,
    DueReason,
    FailureStreak,
    RetryBackoff,
    SourceHold,
    decide_due,
    decide_hold,
    decide_retry,
)
from engine.sync_windows import SyncWindow

__all__ = [
    "ConnectionsCursor",
    "DueRun",
    "PartitionPlan",
    "PartitionSets",
    "deferred_run_key",
    "drop_busy",
    "first_sync_run_key",
    "plan_due_runs",
    "plan_partitions",
    "reauthorized_run_key",
    "retry_run_key",
    "scheduled_run_key",
]

logger = logging.getLogger(__name__)

# Rows are re-examined this long after the cursor: app clocks differ a little, and requests are idempotent.
CURSOR_OVERLAP = timedelta(minutes=1)


def _iso(moment: datetime, *, micro: bool = False) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ" if micro else "%Y%m%dT%H%M%SZ")


def first_sync_run_key(conn: ConnectionSnapshot) -> str:
    """One first sync per activation: a re-authorized connection (new ``updated_at``) gets a new one."""
    marker = conn.updated_at or conn.created_at
    return f"first-sync:{conn.id}:{_iso(marker, micro=True) if marker else 'initial'}"


def reauthorized_run_key(conn: ConnectionSnapshot) -> str:
    """One incremental sync per re-authorization of a connection that synced before (``reauthorized_at``)."""
    marker = conn.reauthorized_at or conn.updated_at
    return f"reauthorized:{conn.id}:{_iso(marker, micro=True) if marker else 'initial'}"


def scheduled_run_key(connection_id: str, slot: datetime) -> str:
    return f"scheduled:{connection_id}:{_iso(slot)}"


def retry_run_key(connection_id: str, failed_at: datetime) -> str:
    """One retry per failure: the key names the end of the failed run it follows."""
    return f"retry:{connection_id}:{_iso(failed_at, micro=True)}"


def deferred_run_key(connection_id: str, until: datetime) -> str:
    """One request per deferral: the key names the time the source said to come back."""
    return f"deferred:{connection_id}:{_iso(until, micro=True)}"


@dataclass(frozen=True)
class ConnectionsCursor:
    """The connections sensor's cursor: the newest ``updated_at`` it has acted on."""

    updated_hwm: datetime | None = None

    def serialize(self) -> str:
        return orjson.dumps({"updated_hwm": self.updated_hwm.isoformat() if self.updated_hwm else None}).decode()

    @classmethod
    def parse(cls, raw: str | None) -> ConnectionsCursor:
        """Read a stored cursor; an unreadable one is logged and treated as none (everything re-examined)."""
        if not raw:
            return cls()
        try:
            data = orjson.loads(raw)
            value = data.get("updated_hwm") if isinstance(data, dict) else None
            if value is None:
                return cls()
            moment = datetime.fromisoformat(str(value))
        except (orjson.JSONDecodeError, ValueError):
            logger.warning("connections sensor: unreadable cursor, re-examining every connection")
            return cls()
        return cls(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


@dataclass(frozen=True)
class PartitionSets:
    """The keys of Dagster's connection partition sets: patient (REST), bulk (backend/group), and the single
    ``connections`` set of before issue 12 (``legacy``), whose keys the connections sensor moves out."""

    patient: frozenset[str] = frozenset()
    bulk: frozenset[str] = frozenset()
    legacy: frozenset[str] = frozenset()

    @property
    def known(self) -> frozenset[str]:
        """Every key in any set: a connection known here is not new (no first sync because of a move)."""
        return self.patient | self.bulk | self.legacy

    def holds(self, conn: ConnectionSnapshot) -> bool:
        """Whether the connection's key is in the set its jobs are partitioned by."""
        return conn.id in (self.bulk if conn.is_bulk else self.patient)


@dataclass(frozen=True)
class PartitionPlan:
    add_patient: tuple[str, ...] = ()
    add_bulk: tuple[str, ...] = ()
    remove_patient: tuple[str, ...] = ()
    remove_bulk: tuple[str, ...] = ()
    remove_legacy: tuple[str, ...] = ()
    migrated: tuple[str, ...] = ()  # legacy keys moved into their new set (no first sync for them)
    first_syncs: tuple[ConnectionSnapshot, ...] = ()
    resumes: tuple[ConnectionSnapshot, ...] = ()  # re-authorized since the cursor, synced before: incremental now
    stop_runs_of: tuple[str, ...] = ()
    cursor: ConnectionsCursor = field(default_factory=ConnectionsCursor)

    departed: tuple[str, ...] = ()  # keys leaving every set: disconnected or deleted connections

    @property
    def add(self) -> tuple[str, ...]:
        return tuple(sorted({*self.add_patient, *self.add_bulk}))


def plan_partitions(
    connections: Iterable[ConnectionSnapshot],
    sets: PartitionSets,
    cursor: ConnectionsCursor,
) -> PartitionPlan:
    """Diff connections against the partition sets: each connection's key in its own set only.

    Every active connection that never completed a sync and is new (in no set, the legacy one included) or
    changed since the cursor gets a first-sync request; run keys make repeats harmless. One that synced before and
    was re-authorized since the cursor (a patient's new grant took it over) gets an incremental sync at once: its
    marks are kept, and the scheduler's slot or a failure streak of the refused grant would make it wait. Connections
    that left (disconnected or deleted) lose their partition, and theirs, like those of disabled connections, get
    their runs stopped. A key found in the legacy set or the wrong set is moved: no first sync, no stopped runs. A
    connection without a patient never syncs: no key, no first sync, and its runs (write-back) are not stopped.
    """
    conns = list(connections)
    kept = [c for c in conns if c.keeps_partition]
    want_patient = {c.id for c in kept if not c.is_bulk}
    want_bulk = {c.id for c in kept if c.is_bulk}
    wanted = want_patient | want_bulk
    departed = sets.known - wanted
    since = cursor.updated_hwm - CURSOR_OVERLAP if cursor.updated_hwm else None

    def changed(c: ConnectionSnapshot) -> bool:
        return since is None or c.updated_at is None or c.updated_at >= since

    new = wanted - sets.known
    first = tuple(c for c in conns if c.syncable and c.last_sync_at is None and (c.id in new or changed(c)))
    resumes = tuple(
        c
        for c in conns
        if c.syncable
        and c.last_sync_at is not None
        and c.reauthorized_at is not None
        and (since is None or c.reauthorized_at >= since)
    )
    # a connection without a patient loses its key but did not leave: its write-back runs go on
    patientless = {c.id for c in conns if c.patientless}
    stop = sorted((departed - patientless) | {c.id for c in conns if c.stops_runs and changed(c)})
    stamps = [c.updated_at for c in conns if c.updated_at is not None]
    if cursor.updated_hwm is not None:
        stamps.append(cursor.updated_hwm)
    remove_patient = sets.patient - want_patient
    remove_bulk = sets.bulk - want_bulk
    return PartitionPlan(
        add_patient=tuple(sorted(want_patient - sets.patient)),
        add_bulk=tuple(sorted(want_bulk - sets.bulk)),
        remove_patient=tuple(sorted(remove_patient)),
        remove_bulk=tuple(sorted(remove_bulk)),
        remove_legacy=tuple(sorted(sets.legacy)),
        migrated=tuple(sorted(sets.legacy & wanted)),
        departed=tuple(sorted(departed)),
        first_syncs=first,
        resumes=resumes,
        stop_runs_of=tuple(stop),
        cursor=ConnectionsCursor(max(stamps) if stamps else None),
    )


@dataclass(frozen=True)
class DueRun:
    connection: ConnectionSnapshot
    run_key: str
    slot: datetime
    retry: bool = False  # a retry of a failed sync (``slot`` is then the failed run's end)


def _decide(
    now: datetime,
    conn: ConnectionSnapshot,
    streak: FailureStreak | None,
    backoff: RetryBackoff,
    window: SyncWindow | None,
    hold: SourceHold | None = None,
) -> DueDecision:
    """The retry of a failure streak once its backoff has passed; the regular slot only when there is no
    streak or the slot began after the last failure (the slot's own run may be the one that failed: its
    run key is spent, and asking for it again would wait for the next slot). Neither before a source's hold
    ends; a deferred run once it has (its batch's run key is spent too)."""
    held = None if hold is None else decide_hold(now, hold, window)
    if held is not None:
        return held
    scheduled = decide_due(
        now,
        last_sync_at=conn.last_sync_at,
        created_at=conn.created_at,
        frequency_hours=conn.sync_frequency_hours,
        window=window,
    )
    if streak is None or (scheduled.slot is not None and scheduled.slot > streak.last_failed_at):
        return scheduled
    return decide_retry(now, streak=streak, backoff=backoff, window=window)


def plan_due_runs(
    now: datetime,
    connections: Iterable[ConnectionSnapshot],
    *,
    partitions: PartitionSets,
    busy: Set[str],
    windows: Mapping[str, SyncWindow],
    failures: Mapping[str, FailureStreak] | None = None,
    backoff: RetryBackoff | None = None,
    holds: Mapping[str, SourceHold] | None = None,
) -> tuple[list[DueRun], dict[DueReason | str, int]]:
    """The scheduled syncs and retries due at ``now``, plus a tally of why the others were not requested.

    Only active connections whose key is in their own partition set are considered (one without a patient is
    counted as ``no_patient``: it never syncs); one that already has a run
    queued or in progress (``busy``) is left alone, so a slow sync is never stacked with another. A connection in
    ``failures`` (its latest runs failed) is retried once its backoff has passed, before its next slot. One in
    ``holds`` (its source said to come back later) is asked for nothing before then; deferred, it is then.
    """
    streaks = failures or {}
    policy = backoff or RetryBackoff()
    due: list[DueRun] = []
    tally: dict[DueReason | str, int] = {}
    for conn in connections:
        if conn.patientless and conn.status == "active":  # never synced by design: counted, so the tick says why
            tally[NO_PATIENT] = tally.get(NO_PATIENT, 0) + 1
            continue
        if not conn.syncable or not partitions.holds(conn):
            continue
        if conn.id in busy:
            tally["busy"] = tally.get("busy", 0) + 1
            continue
        hold = (holds or {}).get(conn.id)
        decision = _decide(now, conn, streaks.get(conn.id), policy, windows.get(conn.provider_id), hold)
        if decision.slot is None:
            tally[decision.reason] = tally.get(decision.reason, 0) + 1
            continue
        if decision.reason is DueReason.RESUME:
            due.append(DueRun(conn, deferred_run_key(conn.id, decision.slot), decision.slot, retry=True))
        elif decision.reason is DueReason.RETRY:
            due.append(DueRun(conn, retry_run_key(conn.id, decision.slot), decision.slot, retry=True))
        else:
            due.append(DueRun(conn, scheduled_run_key(conn.id, decision.slot), decision.slot))
    return due, tally


def drop_busy(due: list[DueRun], busy: Set[str], tally: dict[DueReason | str, int]) -> list[DueRun]:
    """``due`` without the connections in ``busy`` (a run queued or in progress), counted as ``busy`` in ``tally``
    (the sensor plans first, then asks which of the due connections are busy)."""
    kept = [d for d in due if d.connection.id not in busy]
    if len(kept) < len(due):
        tally["busy"] = tally.get("busy", 0) + len(due) - len(kept)
    return kept
