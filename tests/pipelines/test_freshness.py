"""Freshness per connection (issue 12): the overdue rule as a table, and the check job run in-process against a
real app database, as the ``sync_freshness_checks`` schedule runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DefaultScheduleStatus, RunRequest, build_schedule_context

from engine.connection_snapshots import ConnectionSnapshot
from engine.errors import PipelineConfigurationError
from engine.freshness import closed_span, find_overdue
from engine.run_tags import TRIGGER_TAG
from engine.settings import PipelineSettings
from engine.sync_windows import parse_window
from pipelines.definitions import build_definitions
from pipelines.defs.freshness.checks import FRESHNESS_JOB, FreshnessResource, freshness_schedule
from tests.pipelines.appdb import AppDb

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def conn(
    cid: str, *, last: timedelta | None, freq: int = 24, status: str = "active", provider: str = "epic"
) -> ConnectionSnapshot:
    return ConnectionSnapshot(
        cid,
        "t1",
        provider,
        "patient",
        status,
        sync_frequency_hours=freq,
        created_at=NOW - 40 * 24 * HOUR,
        last_sync_at=NOW - last if last is not None else None,
    )


@pytest.mark.parametrize(
    ("connection", "overdue_by"),
    [
        (conn("fresh", last=23 * HOUR), None),
        (conn("in-grace", last=24 * HOUR + 59 * timedelta(minutes=1)), None),
        (conn("late", last=27 * HOUR), 2 * HOUR),
        (conn("hourly-late", last=5 * HOUR, freq=1), 3 * HOUR),
        (conn("never-synced", last=None), 40 * 24 * HOUR - 25 * HOUR),  # counted from its creation
        (conn("reauth", last=30 * 24 * HOUR, status="needs_reauth"), None),  # not scheduled: not overdue
        (conn("clamped", last=9 * 24 * HOUR, freq=10_000), 9 * 24 * HOUR - 7 * 24 * HOUR - HOUR),
    ],
)
def test_overdue_rule(connection: ConnectionSnapshot, overdue_by: timedelta | None) -> None:
    report = find_overdue(NOW, [connection], grace=HOUR, windows={})
    assert [o.overdue_by for o in report.overdue] == ([overdue_by] if overdue_by else [])


def test_a_window_extends_the_deadline_by_its_closed_hours() -> None:
    night = parse_window("22:00-06:00")
    assert closed_span(night) == 16 * HOUR
    late = conn("c", last=30 * HOUR)
    assert find_overdue(NOW, [late], grace=HOUR, windows={"epic": night}).overdue == []
    assert len(find_overdue(NOW, [late], grace=HOUR, windows={}).overdue) == 1


def _run_checks(tmp_path: Path, app_db: AppDb, grace_minutes: int = 60) -> dict[str, tuple[bool, str, dict[str, Any]]]:
    defs = build_definitions(
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": app_db.url})
    )
    job = defs.resolve_job_def(FRESHNESS_JOB)
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, resources={"freshness": FreshnessResource(grace_minutes=grace_minutes)}
        )
    assert result.success
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": (
            e.passed,
            e.description or "",
            {k: v.value for k, v in e.metadata.items()},
        )
        for e in result.get_asset_check_evaluations()
    }


def test_check_job_passes_when_every_connection_is_on_schedule(tmp_path: Path, app_db: AppDb) -> None:
    now = datetime.now(UTC)
    app_db.add("p1", last_sync=now - 2 * HOUR)
    app_db.add("g1", kind="group", last_sync=now - 20 * HOUR)
    checks = _run_checks(tmp_path, app_db)
    assert set(checks) == {"warehouse/Patient:sync_freshness", "bulk/export:sync_freshness"}
    patient = checks["warehouse/Patient:sync_freshness"]
    assert patient[0] is True and patient[2]["checked"] == 1 and patient[2]["overdue"] == 0
    assert checks["bulk/export:sync_freshness"][0] is True


def test_check_job_fails_naming_how_many_are_overdue_and_by_how_much(tmp_path: Path, app_db: AppDb) -> None:
    now = datetime.now(UTC)
    app_db.add("on-time", last_sync=now - 2 * HOUR)
    app_db.add("late", last_sync=now - 30 * HOUR)  # 24 h + 1 h grace: 5 h late
    app_db.add("later", last_sync=now - 50 * HOUR, freq=12)
    app_db.add("paused", status="needs_reauth", last_sync=now - 90 * HOUR)
    app_db.add("g1", kind="group", last_sync=now - 2 * HOUR)
    passed, description, metadata = _run_checks(tmp_path, app_db)["warehouse/Patient:sync_freshness"]
    assert passed is False
    assert description.startswith("2 of 3 active patient connections overdue (worst by 37.0 h: later)")
    assert metadata["overdue"] == 2 and metadata["not_syncing"] == 1 and metadata["grace_minutes"] == 60
    listed = metadata["overdue_connections"]
    assert [(o["connection"], round(o["overdue_hours"])) for o in listed] == [("later", 37), ("late", 5)]
    # A larger grace forgives the 5-hour delay, not the 37-hour one; the bulk check is unaffected.
    relaxed = _run_checks(tmp_path, app_db, grace_minutes=7 * 60)
    assert relaxed["warehouse/Patient:sync_freshness"][2]["overdue"] == 1
    assert relaxed["bulk/export:sync_freshness"][0] is True


def test_the_grace_comes_from_the_settings(tmp_path: Path, app_db: AppDb) -> None:
    now = datetime.now(UTC)
    app_db.add("late", last_sync=now - 30 * HOUR)  # 5 h late with the default hour of grace
    env = {"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": app_db.url}
    relaxed = build_definitions(PipelineSettings.from_env({**env, "EHRSYNC_FRESHNESS_GRACE_MINUTES": "420"}))
    with DagsterInstance.ephemeral() as instance:
        result = relaxed.resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance)
    passed = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert passed == {"warehouse/Patient": True, "bulk/export": True}
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_FRESHNESS_GRACE_MINUTES='soon'"):
        PipelineSettings.from_env({**env, "EHRSYNC_FRESHNESS_GRACE_MINUTES": "soon"})


def test_the_schedule_is_on_by_default_and_asks_one_run_per_tick() -> None:
    assert freshness_schedule.default_status == DefaultScheduleStatus.RUNNING
    assert freshness_schedule.execution_timezone == "UTC"
    tick = datetime(2026, 12, 3, 12, 15, tzinfo=UTC)
    request = freshness_schedule(build_schedule_context(scheduled_execution_time=tick))
    assert isinstance(request, RunRequest)
    assert request.run_key == "freshness:20261203T1215"
    assert request.tags[TRIGGER_TAG] == "freshness"
