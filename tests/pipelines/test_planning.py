"""Sensor planning as tables: partitions follow connections; first syncs; stopped runs; due runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from engine.connection_snapshots import ConnectionSnapshot
from engine.planning import (
    ConnectionsCursor,
    PartitionSets,
    first_sync_run_key,
    plan_due_runs,
    plan_partitions,
    reauthorized_run_key,
    scheduled_run_key,
)
from engine.sync_windows import parse_window
from pipelines.defs.connections.sensors import resume_request
from pipelines.defs.sync.jobs import INCREMENTAL_SYNC_JOB

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def in_both(ids: set[str]) -> PartitionSets:
    """Keys in both sets: whichever kind a connection is, its key is where its jobs look."""
    return PartitionSets(patient=frozenset(ids), bulk=frozenset(ids))


def conn(
    cid: str,
    status: str = "active",
    *,
    kind: str = "patient",
    provider: str = "epic",
    updated: datetime | None = T0,
    last_sync: datetime | None = None,
    freq: int | None = 24,
) -> ConnectionSnapshot:
    return ConnectionSnapshot(
        id=cid,
        tenant_id="t1",
        provider_id=provider,
        kind=kind,
        status=status,
        sync_frequency_hours=freq,
        created_at=T0 - timedelta(days=30),
        updated_at=updated,
        last_sync_at=last_sync,
    )


def test_new_active_connection_gets_a_partition_and_a_first_sync() -> None:
    plan = plan_partitions([conn("c1")], PartitionSets(), ConnectionsCursor())
    assert plan.add == ("c1",)
    assert plan.departed == ()
    assert [c.id for c in plan.first_syncs] == ["c1"]
    assert plan.cursor.updated_hwm == T0


@pytest.mark.parametrize(
    ("status", "partition", "first_sync", "stop"),
    [
        ("active", True, True, False),
        ("needs_reauth", True, False, False),  # kept: history stays browsable while the patient re-authorizes
        ("disabled", True, False, True),  # kept, but its runs stop
        ("disconnected", False, False, True),
    ],
)
def test_status_table(status: str, partition: bool, first_sync: bool, stop: bool) -> None:
    plan = plan_partitions([conn("c1", status)], PartitionSets(), ConnectionsCursor())
    assert (plan.add == ("c1",)) is partition
    assert bool(plan.first_syncs) is first_sync
    assert ("c1" in plan.stop_runs_of) is stop


def test_disconnected_connection_loses_its_partition_and_its_runs_stop() -> None:
    plan = plan_partitions(
        [conn("c1", "disconnected"), conn("c2")], PartitionSets(patient=frozenset({"c1", "c2"})), ConnectionsCursor(T0)
    )
    assert plan.departed == ("c1",)
    assert plan.add == ()
    assert plan.stop_runs_of == ("c1",)


def test_partition_of_a_deleted_connection_is_removed() -> None:
    plan = plan_partitions(
        [conn("c2", last_sync=T0)], PartitionSets(patient=frozenset({"c1", "c2"})), ConnectionsCursor(T0)
    )
    assert plan.departed == ("c1",)
    assert plan.stop_runs_of == ("c1",)


def test_unchanged_connections_are_not_re_requested_after_the_cursor() -> None:
    """A never-synced connection unchanged since the cursor already had its first-sync request."""
    old = T0 - timedelta(hours=2)
    plan = plan_partitions([conn("c1", updated=old)], PartitionSets(patient=frozenset({"c1"})), ConnectionsCursor(T0))
    assert plan.first_syncs == ()
    assert plan.cursor.updated_hwm == T0  # never moves backwards


def test_changes_within_the_overlap_are_re_examined() -> None:
    plan = plan_partitions(
        [conn("c1", updated=T0 - timedelta(seconds=30))],
        PartitionSets(patient=frozenset({"c1"})),
        ConnectionsCursor(T0),
    )
    assert [c.id for c in plan.first_syncs] == ["c1"]


def test_synced_connection_needs_no_first_sync() -> None:
    plan = plan_partitions([conn("c1", last_sync=T0)], PartitionSets(), ConnectionsCursor())
    assert plan.add == ("c1",)
    assert plan.first_syncs == ()


def test_a_reauthorized_connection_that_synced_before_gets_one_incremental_sync_not_a_token_refresh() -> None:
    """A patient's new grant took the connection over (``reauthorized_at``, revision 0012): one incremental sync at
    once, from its kept marks (no first sync: its history is in the warehouse). A token refresh moves ``updated_at``
    only, and an earlier re-authorization before the cursor is not asked again."""
    later = T0 + timedelta(hours=5)
    synced = T0 - timedelta(days=3)
    revived = replace(conn("c1", updated=later, last_sync=synced), reauthorized_at=later)
    refreshed = replace(conn("c2", updated=later, last_sync=synced), reauthorized_at=T0 - timedelta(days=9))
    waiting = replace(conn("c3", "needs_reauth", updated=later, last_sync=synced), reauthorized_at=later)
    plan = plan_partitions([revived, refreshed, waiting], in_both({"c1", "c2", "c3"}), ConnectionsCursor(T0))
    assert [c.id for c in plan.resumes] == ["c1"] and plan.first_syncs == () and plan.add == ()
    request = resume_request(revived)
    assert request.job_name == INCREMENTAL_SYNC_JOB and request.partition_key == "c1"
    assert request.run_key == reauthorized_run_key(revived) == "reauthorized:c1:20261125T150000.000000Z"
    assert request.tags["ehrsync/trigger"] == "reauthorized"
    assert plan_partitions([revived], in_both({"c1"}), plan.cursor).resumes == (revived,)  # overlap: same run key
    assert plan_partitions([revived], in_both({"c1"}), ConnectionsCursor(later + timedelta(hours=1))).resumes == ()


def test_first_sync_run_key_changes_with_reactivation() -> None:
    first = first_sync_run_key(conn("c1", updated=T0))
    again = first_sync_run_key(conn("c1", updated=T0))
    reauthorized = first_sync_run_key(conn("c1", updated=T0 + timedelta(days=1)))
    assert first == again == "first-sync:c1:20261125T100000.000000Z"
    assert reauthorized != first


@pytest.mark.parametrize(
    "raw",
    [None, "", "not json", "[]", '{"updated_hwm": "yesterday"}', '{"updated_hwm": null}'],
)
def test_unreadable_cursor_means_examine_everything(raw: str | None) -> None:
    assert ConnectionsCursor.parse(raw) == ConnectionsCursor()


def test_cursor_round_trip() -> None:
    cursor = ConnectionsCursor(T0)
    assert ConnectionsCursor.parse(cursor.serialize()) == cursor


def test_due_runs_skip_busy_unpartitioned_and_inactive_connections() -> None:
    now = T0 + timedelta(days=2)
    conns = [
        conn("due", last_sync=T0),
        conn("busy", last_sync=T0),
        conn("fresh", last_sync=now - timedelta(hours=1)),
        conn("nopart", last_sync=T0),
        conn("reauth", "needs_reauth", last_sync=T0),
    ]
    due, tally = plan_due_runs(
        now, conns, partitions=in_both({"due", "busy", "fresh", "reauth"}), busy={"busy"}, windows={}
    )
    assert [d.connection.id for d in due] == ["due"]
    assert due[0].run_key == scheduled_run_key("due", due[0].slot)
    assert due[0].run_key == "scheduled:due:20261127T000000Z"
    assert tally == {"busy": 1, "not_yet": 1}


def test_due_runs_respect_the_source_window() -> None:
    night = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    noon = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    conns = [conn("e", provider="epic", last_sync=T0), conn("c", provider="cerner", last_sync=T0)]
    windows = {"epic": parse_window("22:00-06:00")}
    at_noon, tally = plan_due_runs(noon, conns, partitions=in_both({"e", "c"}), busy=set(), windows=windows)
    at_night, _ = plan_due_runs(night, conns, partitions=in_both({"e", "c"}), busy=set(), windows=windows)
    assert [d.connection.id for d in at_noon] == ["c"]  # cerner has no window
    assert tally == {"outside_window": 1}
    assert sorted(d.connection.id for d in at_night) == ["c", "e"]
