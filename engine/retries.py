"""Retries of failed syncs: each connection's failure streak from ``sync_runs`` (the backoff: ``engine.retry_backoff``).

The ``scheduled_syncs`` sensor reads the streaks each tick and hands them to ``plan_due_runs``, which asks
for a retry once ``RetryBackoff.delay(n)`` has passed since the n-th consecutive failure ended. The policy
(``engine.retry_backoff``) is read once by ``engine.settings`` and handed to the sensor as the ``retry`` resource.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, true

from engine.models import SyncRun
from engine.run_outcome import CANCELED_PREFIX
from engine.scheduling import FailureStreak, RetryBackoff, SourceHold
from store import AppDatabase
from store.models import Connection

__all__ = [
    "failure_streaks",
    "holds_ended",
    "source_holds",
    "streak_horizon",
]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# Slack on top of the backoff schedule: a retry can wait past its backoff (a source's window, the run queue).
STREAK_SLACK = timedelta(days=1)


def streak_horizon(backoff: RetryBackoff) -> timedelta:
    """How far back the scheduler reads failures: ``k`` caps plus ``STREAK_SLACK``, where ``k`` failures in a row
    make the wait reach the cap. A streak's failures are at most a cap apart when each is retried on time, so the
    horizon holds at least its newest ``k`` and its wait is the one an unbounded read gives (a longer streak
    waits the cap whatever its length); a failure older than the horizon is past any backoff, and the
    connection's regular slot (due long since) takes over."""
    failures = 1
    while backoff.delay(failures) < backoff.cap:
        failures += 1
    return backoff.cap * failures + STREAK_SLACK


def failure_streaks(db: AppDatabase, *, since: datetime | None = None) -> dict[str, FailureStreak]:
    """Per connection, the runs that failed after its last completed run (none: not in the result).

    ``since`` bounds the read to runs created after it (the scheduler passes ``now - streak_horizon``): the
    sensor ticks every minute, and ``sync_runs`` grows with every run ever made.

    A canceled run (closed ``failed`` with ``CANCELED_PREFIX``) ends a streak like a completed one: somebody
    stopped it on purpose. Open rows (queued, running) do not break a streak: a run in flight is the busy
    check's business, and a dead one is closed as abandoned later. A failed row without a finish time counts
    from its creation. A patient's new authorization that took the connection over (``reauthorized_at``) ends a
    streak too: the failures before it were the replaced grant's (a refused refresh token), and held its first
    sync or the scheduler's retry for their backoff.
    """
    canceled = (SyncRun.status == "failed") & SyncRun.error.like(f"{CANCELED_PREFIX}%")
    recent = SyncRun.created_at > since if since is not None else true()
    succeeded = (  # a completed run ends a streak, and so does a run somebody canceled (not retried)
        select(SyncRun.connection_id.label("cid"), func.max(SyncRun.created_at).label("ok_at"))
        .where((SyncRun.status == "completed") | canceled, recent)
        .group_by(SyncRun.connection_id)
        .subquery()
    )
    ended = func.coalesce(SyncRun.finished_at, SyncRun.created_at)
    query = (
        select(SyncRun.connection_id, func.count(), func.max(ended))
        .join(succeeded, succeeded.c.cid == SyncRun.connection_id, isouter=True)
        .join(Connection, Connection.id == SyncRun.connection_id, isouter=True)
        .where(
            SyncRun.status == "failed",
            recent,
            (succeeded.c.ok_at.is_(None)) | (SyncRun.created_at > succeeded.c.ok_at),
            Connection.reauthorized_at.is_(None) | (SyncRun.created_at > Connection.reauthorized_at),
        )
        .group_by(SyncRun.connection_id)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    return {str(cid): FailureStreak(int(n), _aware(last)) for cid, n, last in rows if last is not None}


def source_holds(db: AppDatabase, *, since: datetime | None = None) -> dict[str, SourceHold]:
    """Per connection whose newest run (created after ``since``) noted when the EHR said to come back
    (``not_before``: a batch member deferred, or stopped, by its source's throttle, ``engine.batch_defer``; a
    connection's own run stopped so, ``engine.run_holds``): that
    time, and whether the run was deferred (never attempted). The scheduler asks for none before it."""
    recent = SyncRun.created_at > since if since is not None else true()
    newest = (
        select(SyncRun.connection_id.label("cid"), func.max(SyncRun.created_at).label("at"))
        .where(recent)
        .group_by(SyncRun.connection_id)
        .subquery()
    )
    query = (
        select(SyncRun.connection_id, SyncRun.not_before, SyncRun.status)
        .join(newest, (newest.c.cid == SyncRun.connection_id) & (newest.c.at == SyncRun.created_at))
        .where(SyncRun.not_before.is_not(None))
    )
    with db.session() as session:
        rows = session.execute(query).all()
    return {str(cid): SourceHold(_aware(until), status == "deferred") for cid, until, status in rows if until}


def holds_ended(db: AppDatabase, start: datetime, end: datetime) -> dict[str, datetime]:
    """Per connection with a row whose ``not_before`` fell in ``(start, end]`` (a hold of its source that ended
    then, unless a newer one holds it still: ``source_holds``), the latest such time. Any row, not only the
    newest: a sync started once the hold ended is the newest row by the time it is asked."""
    query = (
        select(SyncRun.connection_id, func.max(SyncRun.not_before))
        .where(SyncRun.not_before > start, SyncRun.not_before <= end)
        .group_by(SyncRun.connection_id)
    )
    with db.session() as session:
        rows = session.execute(query).all()
    return {str(cid): _aware(until) for cid, until in rows if until is not None}
