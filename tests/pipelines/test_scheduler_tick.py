"""The scheduler tick (every 60 s) stays bounded (issue 10): failure streaks are read from recent runs only, through
an index, and the busy check asks about the due connections only, not every run in progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import inspect

from engine.models import SyncRun
from engine.retries import failure_streaks, streak_horizon
from engine.scheduling import RetryBackoff
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from tests.pipelines.appdb import AppDb, queued_run
from tests.pipelines.scheduler import evaluate_scheduled_syncs


def _run(appdb: AppDb, cid: str, status: str, at: datetime) -> None:
    with appdb.db.session() as session:
        session.add(
            SyncRun(
                id=f"{cid}-{at.timestamp()}",
                connection_id=cid,
                kind="incremental",
                status=status,
                created_at=at,
                started_at=at,
                finished_at=at + timedelta(minutes=1),
                counts={},
                bytes=0,
                error="run failed" if status == "failed" else None,
            )
        )
        session.commit()


def test_streak_horizon_covers_the_backoff_schedule() -> None:
    backoff = RetryBackoff(base=timedelta(minutes=5), cap=timedelta(hours=6))
    # the 8th failure in a row waits the 6 h cap (5, 10, ..., 320 min, then 360): 8 caps and a day of slack
    assert streak_horizon(backoff) == 8 * timedelta(hours=6) + timedelta(days=1)
    assert streak_horizon(RetryBackoff(base=timedelta(hours=1), cap=timedelta(hours=1))) == timedelta(hours=25)


def test_failure_streaks_read_recent_runs_only_and_keep_the_capped_wait(app_db: AppDb) -> None:
    """A long streak spaced by its own backoff still counts enough failures inside the horizon to wait the cap;
    a connection whose only failures are older than the horizon (past any backoff) has no streak."""
    backoff = RetryBackoff(base=timedelta(minutes=5), cap=timedelta(hours=6))
    now = datetime.now(UTC)
    ended = [now]  # 20 failures, each retried after its backoff: the newest ends now
    for failures in range(19, 0, -1):
        ended.append(ended[-1] - backoff.delay(failures))
    for at in ended:
        _run(app_db, "long", "failed", at)
    assert ended[-1] < now - streak_horizon(backoff)  # the streak began before the horizon
    _run(app_db, "long", "completed", ended[-1] - timedelta(days=3))
    _run(app_db, "old", "failed", now - timedelta(days=20))
    _run(app_db, "fresh", "completed", now - timedelta(hours=3))
    _run(app_db, "fresh", "failed", now - timedelta(hours=1))

    streaks = failure_streaks(app_db.db, since=now - streak_horizon(backoff))
    assert set(streaks) == {"long", "fresh"}
    assert backoff.delay(streaks["long"].failures) == backoff.cap
    assert streaks["fresh"].failures == 1
    assert set(failure_streaks(app_db.db)) == {"long", "old", "fresh"}  # unbounded when asked


def test_sync_runs_has_the_scheduler_index(app_db: AppDb) -> None:
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(app_db.db.engine).get_indexes("sync_runs")}
    assert indexes["ix_sync_runs_connection_status_created"] == ["connection_id", "status", "created_at"]


def test_a_tick_asks_about_the_due_connections_only(
    app_db: AppDb, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each tick paged through every queued or running run (here 60, of connections not due) whatever
    was due; now it asks one question per due connection."""
    now = datetime.now(UTC)
    due = app_db.add("due", last_sync=now - timedelta(days=2))
    busy_due = app_db.add("busy-due", last_sync=now - timedelta(days=2))
    others = [app_db.add(f"other-{n}", last_sync=now) for n in range(60)]
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [due, busy_due, *others])
    for cid in [busy_due, *others]:
        queued_run(dagster_instance, cid)
    calls: list[Any] = []
    real = dagster_instance.get_runs

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("filters"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dagster_instance, "get_runs", counting)
    monkeypatch.setattr("pipelines.defs._shared.run_control.BUSY_SCAN_PAGE_SIZE", 10)
    result = evaluate_scheduled_syncs(dagster_instance, app_db)
    assert [r.partition_key for r in result.run_requests or []] == [due]
    assert len(calls) == 3, calls  # one per due connection and one for batch runs in progress, not 7 pages of 10
