"""Failed syncs are retried with backoff within minutes, not at the next slot a day later (issue 10).

The rule as tables (``RetryBackoff``, ``decide_retry``, ``plan_due_runs``), the failure streak read from a real
app database, and the ``scheduled_syncs`` sensor evaluated against both: a connection whose last sync failed
(its first sync too) gets one retry once ``min(base * 2**(n - 1), cap)`` has passed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance

from engine import runs
from engine.connection_snapshots import ConnectionSnapshot
from engine.errors import PipelineConfigurationError
from engine.planning import PartitionSets, plan_due_runs, retry_run_key
from engine.retries import failure_streaks
from engine.retry_backoff import backoff_from_env
from engine.run_outcome import CANCELED_PREFIX
from engine.run_tags import TRIGGER_TAG
from engine.scheduling import DueReason, FailureStreak, RetryBackoff, decide_retry
from engine.sync_windows import parse_window
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.resources import RetryPolicyResource
from store.models import Connection
from tests.pipelines.appdb import AppDb
from tests.pipelines.scheduler import evaluate_scheduled_syncs

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
BACKOFF = RetryBackoff(base=timedelta(minutes=5), cap=timedelta(hours=1))


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 5 * MIN), (2, 10 * MIN), (3, 20 * MIN), (4, 40 * MIN), (5, 60 * MIN), (40, 60 * MIN), (10_000, 60 * MIN)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, delay: timedelta) -> None:
    assert BACKOFF.delay(failures) == delay


def in_both(ids: set[str]) -> PartitionSets:
    """Keys in both sets: whichever kind a connection is, its key is where its jobs look."""
    return PartitionSets(patient=frozenset(ids), bulk=frozenset(ids))


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least one failure"):
        BACKOFF.delay(0)
    with pytest.raises(ValueError, match="base <= cap"):
        RetryBackoff(base=timedelta(hours=2), cap=timedelta(hours=1))


@pytest.mark.parametrize(
    ("failures", "ago", "reason"),
    [
        (1, 4 * MIN, DueReason.BACKING_OFF),
        (1, 5 * MIN, DueReason.RETRY),
        (2, 9 * MIN, DueReason.BACKING_OFF),
        (2, 10 * MIN, DueReason.RETRY),
        (6, 59 * MIN, DueReason.BACKING_OFF),
        (6, 61 * MIN, DueReason.RETRY),
    ],
)
def test_decide_retry(failures: int, ago: timedelta, reason: DueReason) -> None:
    decision = decide_retry(T0, streak=FailureStreak(failures, T0 - ago), backoff=BACKOFF, window=None)
    assert decision.reason is reason
    assert decision.next_due_at == T0 - ago + BACKOFF.delay(failures)
    assert (decision.slot == T0 - ago) is (reason is DueReason.RETRY)


def test_retry_waits_for_the_source_window() -> None:
    streak = FailureStreak(1, T0 - timedelta(hours=1))
    closed = decide_retry(T0, streak=streak, backoff=BACKOFF, window=parse_window("22:00-06:00"))
    assert closed.reason is DueReason.OUTSIDE_WINDOW
    assert decide_retry(T0, streak=streak, backoff=BACKOFF, window=parse_window("09:00-11:00")).due


def _conn(cid: str, *, last_sync: datetime | None, created: datetime) -> ConnectionSnapshot:
    return ConnectionSnapshot(
        id=cid,
        tenant_id="t1",
        provider_id="epic",
        kind="patient",
        status="active",
        sync_frequency_hours=24,
        created_at=created,
        updated_at=created,
        last_sync_at=last_sync,
    )


def test_plan_retries_a_failed_daily_sync_within_minutes_and_a_failed_first_sync() -> None:
    """Before: a daily connection that failed just after its slot waited about a day; a failed first sync too."""
    daily = _conn("daily", last_sync=T0 - timedelta(hours=25), created=T0 - timedelta(days=30))
    first = _conn("first", last_sync=None, created=T0 - timedelta(minutes=20))
    waiting = _conn("waiting", last_sync=T0 - timedelta(hours=25), created=T0 - timedelta(days=30))
    busy = _conn("busy", last_sync=None, created=T0 - timedelta(minutes=20))
    streaks = {
        "daily": FailureStreak(1, T0 - 6 * MIN),
        "first": FailureStreak(2, T0 - 11 * MIN),
        "waiting": FailureStreak(3, T0 - 15 * MIN),  # needs 20 minutes
        "busy": FailureStreak(1, T0 - 30 * MIN),
    }
    # the daily slot (24 h after T0-25h) is due, but its run already failed: its run key is spent
    due, tally = plan_due_runs(
        T0,
        [daily, first, waiting, busy],
        partitions=in_both({"daily", "first", "waiting", "busy"}),
        busy={"busy"},
        windows={},
        failures=streaks,
        backoff=BACKOFF,
    )
    by_id = {d.connection.id: d for d in due}
    assert set(by_id) == {"daily", "first"}, tally
    assert all(d.retry for d in due)
    assert by_id["daily"].run_key == retry_run_key("daily", T0 - 6 * MIN)
    assert by_id["first"].run_key == retry_run_key("first", T0 - 11 * MIN)
    assert tally == {"busy": 1, DueReason.BACKING_OFF: 1}


def test_a_new_slot_after_the_failure_runs_as_scheduled() -> None:
    """A failure from an earlier slot does not hold back the regular run of a slot that began after it."""
    hourly = ConnectionSnapshot(
        id="h",
        tenant_id="t1",
        provider_id="epic",
        kind="patient",
        status="active",
        sync_frequency_hours=1,
        created_at=T0 - timedelta(days=3),
        last_sync_at=T0 - timedelta(hours=3),
    )
    streak = {"h": FailureStreak(5, T0 - 90 * MIN)}  # backoff still running (an hour)
    due, _ = plan_due_runs(
        T0, [hourly], partitions=in_both({"h"}), busy=set(), windows={}, failures=streak, backoff=BACKOFF
    )
    assert [(d.retry, d.run_key) for d in due] == [(False, "scheduled:h:20261125T100000Z")]


def test_plan_without_streaks_keeps_the_slot_rule() -> None:
    fresh = _conn("c", last_sync=T0 - timedelta(hours=2), created=T0 - timedelta(days=3))
    due, tally = plan_due_runs(T0, [fresh], partitions=in_both({"c"}), busy=set(), windows={}, failures={})
    assert not due and tally == {DueReason.NOT_YET: 1}
    streak = {"c": FailureStreak(1, T0 - 10 * MIN)}
    due, _ = plan_due_runs(
        T0, [fresh], partitions=in_both({"c"}), busy=set(), windows={}, failures=streak, backoff=BACKOFF
    )
    assert [d.retry for d in due] == [True]


def test_backoff_from_env() -> None:
    assert backoff_from_env({}) == RetryBackoff(timedelta(seconds=300), timedelta(hours=6))
    custom = backoff_from_env({"EHRSYNC_RETRY_BASE_SECONDS": "60", "EHRSYNC_RETRY_CAP_SECONDS": "600"})
    assert (custom.base, custom.cap) == (timedelta(minutes=1), timedelta(minutes=10))
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_RETRY_BASE_SECONDS='soon'"):
        backoff_from_env({"EHRSYNC_RETRY_BASE_SECONDS": "soon"})
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_RETRY_CAP_SECONDS=60 is below"):
        backoff_from_env({"EHRSYNC_RETRY_BASE_SECONDS": "120", "EHRSYNC_RETRY_CAP_SECONDS": "60"})


def _run(app_db: AppDb, cid: str, outcome: str) -> str:
    run_id = runs.create_run(app_db.db, cid, "incremental", tenant_id=app_db.tenant_id)
    runs.mark_running(app_db.db, run_id)
    if outcome == "completed":
        runs.complete(app_db.db, run_id)
    else:
        runs.fail(app_db.db, run_id, "fhir_unavailable: the EHR answered 503")
    return run_id


def test_failure_streaks_count_failures_since_the_last_completed_run(app_db: AppDb) -> None:
    a, b, c = app_db.add("a"), app_db.add("b"), app_db.add("c")
    for outcome in ("failed", "completed", "failed", "failed"):
        _run(app_db, a, outcome)
    for outcome in ("failed", "completed"):
        _run(app_db, b, outcome)
    _run(app_db, c, "failed")
    open_run = runs.create_run(app_db.db, c, "incremental", tenant_id=app_db.tenant_id)  # in flight: no effect
    streaks = failure_streaks(app_db.db)
    assert set(streaks) == {a, c}
    assert (streaks[a].failures, streaks[c].failures) == (2, 1)
    last = runs.get(app_db.db, runs.history(app_db.db, a, limit=1)[0].id)
    assert last is not None and last.finished_at is not None
    assert streaks[a].last_failed_at == last.finished_at.replace(tzinfo=last.finished_at.tzinfo or UTC)
    assert open_run


def test_a_canceled_run_ends_the_streak(app_db: AppDb) -> None:
    """Somebody canceled the last run (closed failed, ``canceled:``): no retry of it, nor of failures before it."""
    cid = app_db.add("c")
    _run(app_db, cid, "failed")
    canceled = runs.create_run(app_db.db, cid, "incremental", tenant_id=app_db.tenant_id)
    runs.fail(app_db.db, canceled, CANCELED_PREFIX + "Execution of run for incremental_sync canceled.")
    assert failure_streaks(app_db.db) == {}
    _run(app_db, cid, "failed")
    assert failure_streaks(app_db.db)[cid].failures == 1


def test_sensor_retries_a_failed_first_sync_after_its_backoff(app_db: AppDb, dagster_instance: DagsterInstance) -> None:
    """A new connection whose first sync failed gets a retry (incremental job, trigger ``retry``) once the
    backoff has passed; before the change it waited for ``created_at + 24 h``."""
    cid = app_db.add("new", created=datetime.now(UTC) - timedelta(minutes=3))
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid])
    failed = _run(app_db, cid, "failed")

    hourly, one_second = RetryPolicyResource(base_seconds=3600), RetryPolicyResource(base_seconds=1)
    assert not evaluate_scheduled_syncs(dagster_instance, app_db, retry=hourly).run_requests
    time.sleep(1.1)  # the one-second backoff passes
    result = evaluate_scheduled_syncs(dagster_instance, app_db, retry=one_second)
    requests = result.run_requests or []
    assert [r.partition_key for r in requests] == [cid]
    assert requests[0].job_name == "incremental_sync" and requests[0].tags[TRIGGER_TAG] == "retry"
    record = runs.get(app_db.db, failed)
    assert record is not None and record.finished_at is not None
    assert requests[0].run_key == retry_run_key(cid, record.finished_at.replace(tzinfo=UTC))

    _run(app_db, cid, "completed")  # a completed run ends the streak: nothing more until the next slot
    assert not evaluate_scheduled_syncs(dagster_instance, app_db, retry=one_second).run_requests


def test_a_reauthorization_ends_the_streak_of_the_grant_it_replaced(app_db: AppDb) -> None:
    """A patient's new grant took the connection over (``reauthorized_at``): the failures before it were the old
    grant's (a refused refresh token), so they neither hold its first sync (``without_held_first_syncs``) nor make
    the scheduler wait out their backoff; a failure under the new grant starts a streak of its own."""
    cid = app_db.add("c")
    _run(app_db, cid, "failed")
    _run(app_db, cid, "failed")
    assert failure_streaks(app_db.db)[cid].failures == 2
    with app_db.db.session() as session:
        row = session.get(Connection, cid)
        assert row is not None
        row.reauthorized_at = datetime.now(UTC)  # after both failures
        session.commit()
    assert failure_streaks(app_db.db) == {}
    _run(app_db, cid, "failed")
    assert failure_streaks(app_db.db)[cid].failures == 1
