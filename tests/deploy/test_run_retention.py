"""Dagster run retention on the PostgreSQL instance of deploy/dagster.yaml: ``prune_dagster_runs`` deletes finished
runs older than ``EHRSYNC_RUN_RETENTION_DAYS`` with their event logs, never a queued or running one, and keeps each
job's (and connection's) newest successful run. Runs are aged by moving their stored timestamps back, as if they
had ended that long ago."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_schedule_context
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.test_utils import create_run_for_test

from engine.errors import PipelineConfigurationError
from engine.run_retention import RunRetention
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs.maintenance.run_retention import (
    RUN_RETENTION_JOB,
    RUN_RETENTION_SCHEDULE,
    prune_finished_runs,
    run_retention_job,
)


@pytest.fixture
def instance(pg_home: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.from_config(str(pg_home)) as made:
        yield made


def _age(run_ids: list[str], days: float) -> None:
    """Move the runs' creation and last update ``days`` back in the storage database."""
    dsn = (
        f"postgresql://{os.environ['DAGSTER_PG_USERNAME']}@{os.environ['DAGSTER_PG_HOST']}:"
        f"{os.environ['DAGSTER_PG_PORT']}/{os.environ['DAGSTER_PG_DB']}"
    )
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE runs SET update_timestamp = update_timestamp - make_interval(secs => %s), "
            "create_timestamp = create_timestamp - make_interval(secs => %s) WHERE run_id = ANY(%s)",
            (days * 86400, days * 86400, run_ids),
        )


def _sync_run(instance: DagsterInstance, connection: str, status: DagsterRunStatus) -> str:
    origin = RemoteJobOrigin(  # a queued run names where it will be launched from
        repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ehrsync"), "__repository__"),
        job_name="incremental_sync",
    )
    run: DagsterRun = create_run_for_test(
        instance,
        job_name="incremental_sync",
        status=status,
        tags={"dagster/partition": connection},
        remote_job_origin=origin,
    )
    return run.run_id


def test_old_finished_runs_and_their_events_go_queued_running_and_newest_successes_stay(
    instance: DagsterInstance,
) -> None:
    prune = run_retention_job(30)
    old_done = [prune.execute_in_process(instance=instance).run_id for _ in range(2)]
    newest_prune = prune.execute_in_process(instance=instance).run_id
    assert all(instance.all_logs(run_id) for run_id in old_done)
    older_sync = _sync_run(instance, "conn-a", DagsterRunStatus.SUCCESS)
    last_good_sync = _sync_run(instance, "conn-a", DagsterRunStatus.SUCCESS)
    failed = _sync_run(instance, "conn-a", DagsterRunStatus.FAILURE)
    canceled = _sync_run(instance, "conn-b", DagsterRunStatus.CANCELED)
    queued = _sync_run(instance, "conn-b", DagsterRunStatus.QUEUED)
    started = _sync_run(instance, "conn-c", DagsterRunStatus.STARTED)
    _age([*old_done, older_sync, last_good_sync, failed, canceled, queued, started], days=45)
    _age([newest_prune], days=1)

    report = prune_finished_runs(instance, older_than=timedelta(days=30), max_runs=100)

    assert set(report.deleted) == {*old_done, older_sync, failed, canceled}
    assert report.kept_newest == 1  # conn-a's last good sync; the prune job's newest success is recent anyway
    remaining = {r.run_id for r in instance.get_runs()}
    assert remaining == {newest_prune, last_good_sync, queued, started}
    assert not any(instance.all_logs(run_id) for run_id in old_done)  # event logs went with their runs
    assert instance.all_logs(newest_prune)


def test_the_job_prunes_with_the_settings_age_and_its_schedule_reads_the_settings_cron(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    settings = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
            "EHRSYNC_RUN_RETENTION_DAYS": "10",
            "EHRSYNC_RUN_RETENTION_CRON": "*/5  * * * *",
        }
    )
    defs = build_definitions(settings)
    job = defs.resolve_job_def(RUN_RETENTION_JOB)
    gone, kept = (_sync_run(instance, c, DagsterRunStatus.FAILURE) for c in ("x", "y"))
    _age([gone], days=11)
    _age([kept], days=9)

    result = job.execute_in_process(instance=instance)

    assert result.success
    assert result.output_for_node("delete_old_runs") == 1
    assert instance.get_run_by_id(gone) is None and instance.get_run_by_id(kept) is not None
    schedule = defs.resolve_schedule_def(RUN_RETENTION_SCHEDULE)
    assert schedule.cron_schedule == "*/5 * * * *" and schedule.execution_timezone == "UTC"
    tick = datetime(2026, 3, 1, 2, 15, tzinfo=UTC)
    with build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert requests and requests[0].tags["ehrsync/trigger"] == "retention"
    assert requests[0].run_key == "prune-runs:20260301T0215"  # one run per tick, also for a cron of minutes


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EHRSYNC_RUN_RETENTION_DAYS", "0"),
        ("EHRSYNC_RUN_RETENTION_DAYS", "thirty"),
        ("EHRSYNC_RUN_RETENTION_DAYS", "3651"),
        ("EHRSYNC_RUN_RETENTION_CRON", "daily"),
        ("EHRSYNC_RUN_RETENTION_CRON", "0 2 * *"),
    ],
)
def test_a_malformed_retention_setting_stops_the_start_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(PipelineConfigurationError, match=variable):
        PipelineSettings.from_env({variable: value})


def test_a_cron_dagster_refuses_stops_the_code_location_naming_the_variable(tmp_path: Path) -> None:
    """The settings refuse such a cron at start (below); the code location keeps Dagster's own check."""
    loaded = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)})
    settings = replace(loaded, run_retention=RunRetention(cron="99 99 * * *"))
    with pytest.raises(PipelineConfigurationError, match="EHRSYNC_RUN_RETENTION_CRON"):
        build_definitions(settings)


def test_defaults_keep_thirty_days_and_prune_daily() -> None:
    assert PipelineSettings.from_env({}).run_retention == RunRetention(days=30, cron="15 2 * * *")


def test_a_capped_pass_deletes_the_oldest_first_past_any_number_of_kept_newest_successes(
    instance: DagsterInstance,
) -> None:
    """More runs kept as their connection's newest success than ``max_runs``, all newer than the runs that are due:
    a pass that took the newest ``max_runs`` old runs and then skipped the kept ones deleted nothing, every pass,
    and Dagster's storage grew without bound. The oldest due runs go first."""
    oldest, older, old = (_sync_run(instance, "conn-a", DagsterRunStatus.FAILURE) for _ in range(3))
    kept = [_sync_run(instance, f"conn-{n}", DagsterRunStatus.SUCCESS) for n in range(4)]
    _age([oldest, older, old, *kept], days=45)

    first = prune_finished_runs(instance, older_than=timedelta(days=30), max_runs=2)

    assert first.deleted == (oldest, older)
    second = prune_finished_runs(instance, older_than=timedelta(days=30), max_runs=2)
    assert second.deleted == (old,)
    assert second.kept_newest == 4
    assert {r.run_id for r in instance.get_runs()} == set(kept)


_NEVER_OR_REFUSED = [
    ("0 0 31 2 *", "it never fires: no month it names (2) has day 31"),
    ("0 0 30,31 2 *", "it never fires: no month it names (2) has day 30"),
    ("0 0 31 4,6,9,11 *", "it never fires: no month it names (4,6,9,11) has day 31"),  # Dagster takes this one
    ("0 0 31 2 1", "no month it names (2) has day 31"),
    ("99 99 * * *", "the minute field's 99 is outside 0-59"),
    ("0 24 * * *", "the hour field's 24 is outside 0-23"),
    ("0 0 0 * *", "the day field's 0 is outside 1-31"),
    ("0 0 * 13 *", "the month field's 13 is outside 1-12"),
    ("0 0 * * 8", "the weekday field's 8 is outside 0-7"),
    ("*/0 * * * *", "the minute field's '*/0' has a step of 0"),
    ("1,,3 * * * *", "the minute field's '' is not a number, range, step or *"),
    ("0 0 30 FEB *", "it never fires: no month it names (2) has day 30"),
    ("0 0 30-L 2 *", "it never fires: no month it names (2) has day 30"),
    ("0 0 31 4 ?", "it never fires: no month it names (4) has day 31"),
    ("0 0 L/2 * *", "the day field's 'L/2' is not a number, range, step or *"),
    ("0 0 * * 8#1", "the weekday field's 8 is outside 0-7"),
    # with a day named too, Dagster's cron fires on some such days and never on others ('0 0 15 * 1#1': never)
    ("0 0 15 * 1#1", "the weekday field's '1#1' needs * or ? as the day (a day of the month is named)"),
    ("@reboot", "'@reboot' is not one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"),
]


@pytest.mark.parametrize(("cron", "problem"), _NEVER_OR_REFUSED, ids=[c for c, _ in _NEVER_OR_REFUSED])
def test_a_cron_that_never_fires_or_dagster_refuses_stops_the_start(cron: str, problem: str) -> None:
    """Before, the settings took any five fields of digits: ``0 0 31 2 *`` or ``99 99 * * *`` passed ``ehrsync
    sync`` and failed only the code location's load, and ``0 0 31 4 *`` (which Dagster accepts) loaded a retention
    schedule that never fires. Each is one line at start naming the variable and the problem."""
    with pytest.raises(PipelineConfigurationError) as caught:
        PipelineSettings.from_env({"EHRSYNC_RUN_RETENTION_CRON": cron})
    assert str(caught.value) == (
        f"EHRSYNC_RUN_RETENTION_CRON={cron!r} is not a schedule that runs: {problem} "
        "(minute hour day month weekday, UTC)"
    )


@pytest.mark.parametrize(
    "cron",
    [
        "15 2 * * *",
        "0 0 29 2 *",
        "0 0 31 1-12/2 *",
        "0 22-2 * * *",
        "*/60 * * * *",
        "0 0 * * 7",
        "5/15 * * * 1-5",
        # names, aliases and the other forms Dagster's cron takes (the settings refused them as not five fields)
        "@daily",
        "@HOURLY",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
        "0 3 * * MON-FRI",
        "0 3 * * mon",
        "30 1 * JAN,jul *",
        "0 3 * jan-mar/2 sun,sat",
        "0 0 * dec-feb *",
        "0 0 * * fri-mon",
        "0 0 29 feb *",
        "0 0 L * *",
        "0 0 1,L * *",
        "0 0 15-L * *",
        "0 0 L 2 *",
        "0 0 ? * *",
        "0 0 * * ?",
        "0 0 1 * ?",
        "0 0 * * 1#2",
        "0 0 ? * mon#5",
        "0 0 * * L5",
    ],
)
def test_a_cron_that_fires_is_taken_and_dagster_agrees(cron: str) -> None:
    """Every cron the settings take, Dagster takes and finds a next tick for (February 29 within four years); and
    every form of Dagster's cron that fires is taken (``@daily``, ``MON-FRI``, ``JAN``, ``L``, ``?``, ``1#2``), not
    refused as "not a five-field cron expression"."""
    from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

    assert PipelineSettings.from_env({"EHRSYNC_RUN_RETENTION_CRON": cron}).run_retention.cron == cron
    assert is_valid_cron_string(cron)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    tick = next(cron_string_iterator(start.timestamp(), cron, "UTC"))
    assert start <= tick < start + timedelta(days=4 * 366)
