"""weekly_reconcile_deletes (BDX-31): one run a week per active patient connection that has a partition, at the
connection's own hour of the week, so the week's runs are spread over its 168 hours."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRequest
from dagster._core.storage.tags import PARTITION_NAME_TAG, RUN_KEY_TAG
from dagster._core.test_utils import create_run_for_test

from engine import runs
from engine.run_tags import CONNECTION_TAG, TRIGGER_TAG
from pipelines.defs._shared.partitions import PATIENT_CONNECTIONS_PARTITIONS_NAME
from pipelines.defs.maintenance.jobs import HOURS_A_WEEK, RECONCILE_JOB, reconcile_hour
from pipelines.defs.maintenance.reconcile_slots import BUSY, HELD_TAG, MAX_HELD_RUNS
from tests.pipelines.appdb import AppDb
from tests.pipelines.scheduler import landing_root, weekly_reconcile_ticks

FAILURE, NOT_STARTED, SUCCESS = DagsterRunStatus.FAILURE, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.SUCCESS


def test_weekly_reconcile_requests_active_patient_partitions_only(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    patient = app_db.add("patient")
    app_db.add("backend", kind="backend")  # Bulk: deletions come from the export's deleted files
    app_db.add("disabled", status="disabled")
    app_db.add("unpartitioned")
    dagster_instance_on_disk.add_dynamic_partitions(
        PATIENT_CONNECTIONS_PARTITIONS_NAME, ["patient", "backend", "disabled"]
    )
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    by_tick = {}
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, monday):  # every hourly tick
        assert isinstance(requests, list) and all(isinstance(r, RunRequest) for r in requests)
        if requests:
            by_tick[hour] = requests
    hour = reconcile_hour(patient)
    assert list(by_tick) == [hour]  # once a week, at the connection's own hour; the others never
    [request] = by_tick[hour]
    day = f"{monday + timedelta(hours=hour):%Y%m%d}"
    assert (request.partition_key, request.run_key) == (patient, f"reconcile:patient:{day}")
    assert request.tags[CONNECTION_TAG] == patient
    assert request.tags[TRIGGER_TAG] == "reconcile"


MONDAY = datetime(2026, 11, 23, tzinfo=UTC)


def _early_in_the_week(app_db: AppDb, instance: DagsterInstance) -> tuple[str, datetime]:
    """A partitioned patient connection whose hour of the week leaves a day of the week after it, and that hour."""
    cid = next(f"held-{i}" for i in range(1000) if reconcile_hour(f"held-{i}") < HOURS_A_WEEK - 24)
    app_db.add(cid)
    instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [cid])
    return cid, MONDAY + timedelta(hours=reconcile_hour(cid))


def test_a_connection_held_at_its_hour_is_asked_for_once_the_hold_ends(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    """BDX-31: held at its hour (its newest row's not_before still to come), no run that would fail `not tried`;
    at the first tick after the hold ends, one run with that hour's run key, though a sync started after the hold
    ended is the newest row by then (before, the connection waited for its hour next week: two weeks)."""
    cid, slot = _early_in_the_week(app_db, dagster_instance_on_disk)
    app_db.add_sync_row(cid, slot - timedelta(hours=2), not_before=slot + timedelta(hours=5, minutes=30))
    asked = {}
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, MONDAY):
        if requests:
            asked[hour] = [(r.partition_key, r.run_key, r.tags[TRIGGER_TAG]) for r in requests]
        if MONDAY + timedelta(hours=hour) == slot + timedelta(hours=5):  # the scheduler's sync once the hold ends
            app_db.add_sync_row(cid, slot + timedelta(hours=5, minutes=40))
    first_after = reconcile_hour(cid) + 6
    assert asked == {first_after: [(cid, f"reconcile:{cid}:{slot:%Y%m%d}", "reconcile")]}


@pytest.mark.parametrize("sent", [True, False], ids=["met_in_the_run", "held_before_any_request"])
def test_a_hold_after_the_hour_asks_again_only_if_the_hours_run_sent_nothing(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance, sent: bool
) -> None:
    """Not held at its hour, the connection's run was asked for. A hold it (or a sync) met after the hour, once
    ended, asks for no second run (Dagster's run-key dedup of a schedule holds only within one tick); but when
    the hold came before the run sent anything (it waited in the queue: failed `not tried`, tagged), the slot is
    asked for again, with its run key, once the hold ends."""
    cid, slot = _early_in_the_week(app_db, dagster_instance_on_disk)
    row = app_db.add_sync_row(cid, slot - timedelta(hours=2))
    asked = []
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, MONDAY):
        asked += [(hour, r.run_key) for r in requests]
        for request in requests:  # the daemon's run of the request, which then meets the source's throttle
            tags = {RUN_KEY_TAG: str(request.run_key)} | ({} if sent else {HELD_TAG: "true"})
            create_run_for_test(dagster_instance_on_disk, job_name=RECONCILE_JOB, tags=tags, status=FAILURE)
            runs.hold_until(app_db.db, row, slot + timedelta(hours=3, minutes=30))
    key = f"reconcile:{cid}:{slot:%Y%m%d}"
    assert asked == [(reconcile_hour(cid), key)] + ([] if sent else [(reconcile_hour(cid) + 4, key)])


def test_a_held_runs_automatic_retry_still_queued_when_the_hold_ends_is_no_second_run_of_the_slot(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    """BDX-31: Dagster's automatic retry of a run held before any request copies its tags (``ehrsync/held=true``
    and the run key). Still queued when the hold ends, it has met nothing yet and will reconcile once it starts:
    the slot is not asked for a second time (before, the retry and a new run both reconciled the connection)."""
    cid, slot = _early_in_the_week(app_db, dagster_instance_on_disk)
    row = app_db.add_sync_row(cid, slot - timedelta(hours=2))
    asked = []
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, MONDAY):
        asked += [(hour, r.run_key) for r in requests]
        for request in requests:  # held before any request, and its retry not started yet (the run queue)
            tags = {RUN_KEY_TAG: str(request.run_key), HELD_TAG: "true"}
            create_run_for_test(dagster_instance_on_disk, job_name=RECONCILE_JOB, tags=tags, status=FAILURE)
            retry = tags | {"dagster/retry_number": "1"}
            create_run_for_test(dagster_instance_on_disk, job_name=RECONCILE_JOB, tags=retry, status=NOT_STARTED)
            runs.hold_until(app_db.db, row, slot + timedelta(hours=3, minutes=30))
    assert asked == [(reconcile_hour(cid), f"reconcile:{cid}:{slot:%Y%m%d}")]


def test_a_slot_held_again_and_again_is_asked_for_at_most_max_held_runs_times_a_week(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    """A source down or throttling all week: each run of the slot is stopped by it (tagged held) and notes a new
    hold that ends within the hour. The slot is asked for ``MAX_HELD_RUNS`` times in all, then waits for next
    week (before, at every tick after each hold: a Dagster run an hour, all week, for each of its connections)."""
    cid, slot = _early_in_the_week(app_db, dagster_instance_on_disk)
    row = app_db.add_sync_row(cid, slot - timedelta(hours=2))
    asked = []
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, MONDAY):
        asked += [hour for _ in requests]
        for request in requests:  # stopped by its source (an unreachable EHR: 5 min), before or after a request
            tags = {RUN_KEY_TAG: str(request.run_key), HELD_TAG: "true"}
            create_run_for_test(dagster_instance_on_disk, job_name=RECONCILE_JOB, tags=tags, status=FAILURE)
            runs.hold_until(app_db.db, row, MONDAY + timedelta(hours=hour, minutes=5))
    first = reconcile_hour(cid)
    assert asked == [first + n for n in range(MAX_HELD_RUNS)]


def test_a_slot_found_busy_is_asked_for_at_the_next_tick_at_most_max_held_runs_times_a_week(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    """BDX-31: each run of the slot finds the connection's lock held by a sync (``connection_busy``, tagged
    ``ehrsync/held=busy``), though each tick found it free (no lock held here: a sync that starts between the tick
    and the run's start): with no hold to wait for, the slot is asked for again at the next tick, with its run key,
    ``MAX_HELD_RUNS`` runs in all, then waits for next week (before, the first such run was the week's: every type
    of the connection waited for next week's hour). While a tick finds it busy, no run is asked for
    (``tests/engine/test_reconcile_reasks.py``)."""
    cid, slot = _early_in_the_week(app_db, dagster_instance_on_disk)
    app_db.add_sync_row(cid, slot - timedelta(hours=2))
    asked = []
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, MONDAY):
        asked += [(hour, r.run_key) for r in requests]
        for request in requests:  # the daemon's run of the request, stopped at once: a sync holds the connection
            tags = {RUN_KEY_TAG: str(request.run_key), HELD_TAG: BUSY, PARTITION_NAME_TAG: cid}
            create_run_for_test(dagster_instance_on_disk, job_name=RECONCILE_JOB, tags=tags, status=FAILURE)
    key = f"reconcile:{cid}:{slot:%Y%m%d}"
    assert asked == [(reconcile_hour(cid) + n, key) for n in range(MAX_HELD_RUNS)]


def test_a_lock_file_the_tick_cannot_read_costs_no_other_connection_its_weeks_run(
    app_db: AppDb, dagster_instance_on_disk: DagsterInstance
) -> None:
    """The tick tries the lock of a slot found busy (``busy_holder``); an error reading the lock folder (here a
    file where ``.locks`` should be; a stale NFS handle or a permission in a deployment) asks for the slot, its
    run waiting for the lock as before the test. Before, it raised: the tick failed, and with it the week's run
    of the connection whose hour that tick is, not asked for again that week."""
    cid, _ = _early_in_the_week(app_db, dagster_instance_on_disk)
    other = next(f"next-{i}" for i in range(10_000) if reconcile_hour(f"next-{i}") == reconcile_hour(cid) + 1)
    app_db.add(other)
    dagster_instance_on_disk.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, [other])
    locks = landing_root(app_db) / ".locks"
    locks.parent.mkdir(parents=True, exist_ok=True)
    locks.write_text("not a folder")
    asked = []
    for hour, requests in weekly_reconcile_ticks(dagster_instance_on_disk, app_db, MONDAY):
        asked += [(hour, r.partition_key) for r in requests]
        for request in requests:  # cid's run finds the connection busy; other's reconciles
            tags = {RUN_KEY_TAG: str(request.run_key), PARTITION_NAME_TAG: str(request.partition_key)}
            busy, status = ({HELD_TAG: BUSY}, FAILURE) if request.partition_key == cid else ({}, SUCCESS)
            create_run_for_test(dagster_instance_on_disk, job_name=RECONCILE_JOB, tags=tags | busy, status=status)
    first = reconcile_hour(cid)
    assert (first + 1, other) in asked, asked
    assert [hour for hour, asked_cid in asked if asked_cid == cid] == [first + n for n in range(MAX_HELD_RUNS)]


def test_ten_thousand_connections_are_spread_over_the_week() -> None:
    """No hour holds more than twice its share (10,000 / 168 = 60 on average), so a tick never queues enough
    reconciliations to hold back the scheduled syncs for long."""
    per_hour = Counter(reconcile_hour(f"conn-{i:05d}") for i in range(10_000))
    assert len(per_hour) == HOURS_A_WEEK and max(per_hour.values()) <= 2 * 10_000 / HOURS_A_WEEK
