"""Which connections the weekly reconcile schedule asks for at a tick, and for which weekly slot (BDX-31).

Each connection has its hour of the week (its slot). At its slot a connection whose source is held (its newest
``sync_runs`` row notes a ``not_before`` still to come, ``engine.run_holds``) is not asked for: the run would only
fail ``not tried``. It is asked for instead at the first tick after a hold that ran past the slot ended, before
its next slot, with the slot's run key, unless a run of that key exists already (the slot's run was asked for and
met the hold later), one held aside (tagged ``ehrsync/held``: the hold came between the tick and the run's start,
as a run waits in the queue, or a throttle of its source stopped it partway, its later types not reached). A
slot whose run another run holding the connection's lock stopped (``connection_busy``: a sync of it, say one the
scheduler asked for as a hold ended; tagged ``ehrsync/held=busy``) is asked for again at the first tick that finds
the connection free (``engine.connection_lock.busy_holder``, the lock the run would take), as long as no newer run of
the slot exists: while it is busy no run is asked for, so a sync of many hours spends neither runs nor the cap.
Either way, at most ``MAX_HELD_RUNS`` runs held aside a slot, a week.
Dagster's schedule run-key dedup is per tick, so that one query of the instance, for every connection a hold
released this hour at once, keeps it to one run a slot. Stateless: schedules have no cursor, so the slot is read
back from the tick's time and the holds from ``sync_runs``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import PARTITION_NAME_TAG, RUN_KEY_TAG

from engine.connection_lock import busy_holder
from engine.scheduling import SourceHold

__all__ = [
    "BUSY",
    "HELD_ASIDE",
    "HELD_TAG",
    "HOURS_A_WEEK",
    "MAX_HELD_RUNS",
    "busy_slots",
    "defer_busy",
    "due_slots",
    "last_slot",
    "reconcile_hour",
    "run_key",
    "unrequested",
]

HOURS_A_WEEK = 7 * 24
HELD_TAG = "ehrsync/held"  # on a reconcile run its source's hold stopped before any request, or partway
BUSY = "busy"  # HELD_TAG's value on a week's run stopped by another run holding the connection's lock
HELD_ASIDE = ("true", BUSY)  # HELD_TAG's values on a run whose slot the schedule asks for again (else "false")
#: The held runs of one slot after which it is not asked for again that week: a source down or throttling all
#: week (each run stopped by it notes a hold of its own, 5 min for an unreachable EHR) would otherwise have its
#: slot asked for at nearly every hourly tick, a Dagster run each, for every connection of that source.
MAX_HELD_RUNS = 6
_HOUR = timedelta(hours=1)


def reconcile_hour(connection_id: str) -> int:
    """The connection's hour of the week (0 = Monday 00:00 UTC): the same every week, spread evenly by its id."""
    return int.from_bytes(hashlib.sha256(connection_id.encode("utf-8")).digest()[:8], "big") % HOURS_A_WEEK


def last_slot(connection_id: str, tick: datetime) -> datetime:
    """The start of the connection's hour of the week at or before ``tick`` (within the week up to it)."""
    hour = tick.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    now = hour.weekday() * 24 + hour.hour
    return hour - timedelta(hours=(now - reconcile_hour(connection_id)) % HOURS_A_WEEK)


def run_key(connection_id: str, slot: datetime) -> str:
    """The slot's run key: the same for the run asked at the slot and for one asked after a hold that missed it."""
    return f"reconcile:{connection_id}:{slot:%Y%m%d}"


def due_slots(
    connection_ids: Iterable[str],
    tick: datetime,
    holds: Mapping[str, SourceHold],
    ended: Mapping[str, datetime],
    busy: Mapping[str, datetime] | None = None,
) -> dict[str, datetime]:
    """Per connection due at ``tick``, its slot: its slot is this tick's hour, or a hold that ran past its slot
    ended within the hour up to ``tick`` (``ended``: ``engine.retries.holds_ended``), or a run of its slot found
    the connection busy (``busy``: :func:`busy_slots`); never while its newest row holds it (``holds``:
    ``engine.retries.source_holds``)."""
    busy = busy or {}
    due = {}
    for cid in connection_ids:
        hold = holds.get(cid)
        if hold is not None and hold.until > tick:
            continue
        slot = last_slot(cid, tick)
        released = ended.get(cid)
        hold_ended = released is not None and released > slot and tick - _HOUR < released <= tick
        if slot == tick or hold_ended or busy.get(cid) == slot:
            due[cid] = slot
    return due


def unrequested(instance: DagsterInstance, job_name: str, keys: Iterable[str]) -> set[str]:
    """Of ``keys``, those no run of ``job_name`` carries yet but runs held (``HELD_TAG``, on a finished run: an
    automatic retry not yet finished carries its held parent's tags, yet reconciles once it starts after the hold),
    fewer than ``MAX_HELD_RUNS`` of them: one query of the instance for them all."""
    wanted = set(keys)
    if not wanted:
        return wanted
    runs = instance.get_runs(RunsFilter(job_name=job_name, tags={RUN_KEY_TAG: sorted(wanted)}))
    held = {run.run_id for run in runs if run.tags.get(HELD_TAG) in HELD_ASIDE and run.is_finished}
    spent = Counter(run.tags.get(RUN_KEY_TAG) for run in runs if run.run_id in held)
    taken = {run.tags.get(RUN_KEY_TAG) for run in runs if run.run_id not in held}
    return {key for key in wanted - taken if spent[key] < MAX_HELD_RUNS}


def busy_slots(instance: DagsterInstance, job_name: str, tick: datetime) -> dict[str, datetime]:
    """Per connection, its slot of the week up to ``tick`` when a run of that slot failed finding the connection
    busy (tagged ``ehrsync/held=busy``): one query of the instance, for the runs of the week's hours only."""
    since = tick - timedelta(hours=HOURS_A_WEEK)
    wanted = RunsFilter(
        job_name=job_name, tags={HELD_TAG: BUSY}, statuses=[DagsterRunStatus.FAILURE], created_after=since
    )
    busy = {}
    for run in instance.get_runs(wanted):
        cid = run.tags.get(PARTITION_NAME_TAG)
        if cid is not None and run.tags.get(RUN_KEY_TAG) == run_key(cid, slot := last_slot(cid, tick)):
            busy[cid] = slot
    return busy


def defer_busy(
    asked: Mapping[str, datetime], busy: Mapping[str, datetime], landing_root: Path, log: logging.Logger
) -> dict[str, datetime]:
    """Of the slots ``asked`` at a tick, those to ask for now: not a slot a run of which found the connection busy
    (``busy``: :func:`busy_slots`) while the connection is busy still. Asked for now, its run would only find it
    busy again (a Dagster run, and one of the slot's ``MAX_HELD_RUNS``, for nothing: a sync of more than six hours
    spent the week's asks); deferred, it is asked for at the first tick that finds the connection free
    (``busy_slots`` still names it), and the tick's log says so. The lock is tried only for the slots found busy,
    not for every connection at its hour."""
    now = {}
    for cid, slot in asked.items():
        holder = _tried_lock(landing_root, cid, log) if busy.get(cid) == slot else None
        if holder is None:
            now[cid] = slot
        else:
            log.info(
                "reconcile of %s (%s) deferred: the connection is busy, %s holds it", cid, run_key(cid, slot), holder
            )
    return now


def _tried_lock(landing_root: Path, connection_id: str, log: logging.Logger) -> str | None:
    """``busy_holder``, or None (asked for: its run waits for the lock, as before the test) when the lock file
    cannot be read (a stale NFS handle, no permission): raised, it would fail the whole tick, and with it the
    week's run of every connection whose hour this is."""
    try:
        return busy_holder(landing_root, connection_id)
    except OSError as exc:
        log.warning(
            "reconcile of %s: could not try the connection's lock (%s: %s); asked for, its run waits for the lock",
            connection_id,
            type(exc).__name__,
            exc,
        )
        return None
