"""A week's deletion reconciliation (BDX-31) asked for again within its week, through the real job over a
sandbox and the real weekly schedule: a run that found the connection busy (another run, a sync, holding its
lock: ``connection_busy``) is asked for again at the first hourly tick that finds the connection free, and none
while it is busy, as one a throttle of its source stopped is once the hold ends; and a run asked for again
reconciles only the types the week's earlier runs did not finish."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, build_schedule_context
from dagster._core.storage.tags import RUN_KEY_TAG

from engine import PATIENT_TYPES, runs
from engine.connection_lock import LOCK_WAIT_ENV
from engine.run_tags import TRIGGER_TAG
from pipelines.defs.maintenance.jobs import RECONCILE_TRIGGER, weekly_reconcile_schedule
from pipelines.defs.maintenance.reconcile_slots import HELD_TAG, MAX_HELD_RUNS, last_slot, run_key
from sandbox import SandboxServer
from store.models import Connection
from tests.engine.conftest import RequestLog
from tests.engine.helpers import PATIENT_SCOPE, SyncWorld, add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import run_reconcile, schedule_resources, sync_type

REPO = Path(__file__).resolve().parents[2]
_WEEKLY = {TRIGGER_TAG: RECONCILE_TRIGGER}  # what the weekly schedule tags its runs with


@contextmanager
def _synced_elsewhere(world: SyncWorld, connection_id: str) -> Iterator[None]:
    """Another process (a sync) holding the connection's lock (tests/engine/residue_driver.py)."""
    root = str(world.env.zone.root)
    cmd = [sys.executable, "-m", "tests.engine.residue_driver", "hold", root, connection_id, "run-syncing"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.stderr
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


class _TickLog(logging.Handler):
    """The lines a schedule's tick logs (its context's log, which Dagster keeps with the tick in its UI)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _asked(
    world: SyncWorld, instance: DagsterInstance, tick: datetime, log: _TickLog | None = None
) -> list[tuple[str | None, str | None]]:
    """What the real weekly schedule asks for at ``tick``: (partition, run key) per request; ``log`` gets what
    the tick logs."""
    resources = schedule_resources(world)
    with build_schedule_context(instance=instance, scheduled_execution_time=tick, resources=resources) as context:
        if log is not None:
            context.log.addHandler(log)
        asked = weekly_reconcile_schedule(context)
    assert isinstance(asked, list)
    return [(r.partition_key, r.run_key) for r in asked]


def _ticks_of_one_slot(connection_id: str, count: int) -> list[datetime]:
    """``count`` hourly ticks from the next one, all after the connection's hour of the week and before its next:
    the ticks that may ask for its slot again (its own hour's tick asks for it anyway)."""
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    ticks = [first + timedelta(hours=n) for n in range(count)]
    at_the_hour = [tick for tick in ticks if last_slot(connection_id, tick) == tick]
    if at_the_hour:
        ticks = [at_the_hour[0] + timedelta(hours=n + 1) for n in range(count)]
    return ticks


def _connected(
    start_sandbox: Callable[..., SandboxServer], world: SyncWorld, http: httpx.Client
) -> tuple[SandboxServer, str]:
    """A sandbox of one patient, connected and its Patient synced (a reconcile has rows to look at)."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert sync_type(world, cid, "Patient").error is None
    return sb, cid


def _throttled_at_observation(
    start_sandbox: Callable[..., SandboxServer], world: SyncWorld, http: httpx.Client
) -> tuple[SandboxServer, str, str]:
    """A connected patient whose EHR answers every Observation request 429, Retry-After 50 minutes (a week's run
    stops there, its source held), and the run key of the connection's slot this week."""
    sb, cid = _connected(start_sandbox, world, http)
    add_fault(http, sb, "429", path="/fhir/Observation", retry_after="3000", times=None)
    return sb, cid, run_key(cid, last_slot(cid, datetime.now(UTC)))


def _hold_ends(world: SyncWorld, sb: SandboxServer, connection_id: str) -> None:
    """The throttle is over: the EHR answers again and the hold noted on the connection's row has ended."""
    sb.admin.clear_faults()
    (row,) = runs.history(world.env.db, connection_id)
    runs.hold_until(world.env.db, row.id, datetime.now(UTC) - timedelta(seconds=1))


def _failure_metadata(result: ExecuteInProcessResult, name: str) -> dict[str, str]:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    value = failure.step_failure_data.user_failure_data.metadata[name].value
    assert isinstance(value, dict)
    return value


def test_a_weeks_reconcile_that_found_the_connection_busy_is_asked_for_again_at_the_next_tick_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync holds the connection's lock when the week's run starts: it stops at Patient (``connection_busy``),
    every later type not reached. The real schedule's next hourly tick, the sync over, asks for the slot again
    with its run key.
    Before, the run was not tagged held (not a throttle), its key counted as taken, and every type of the
    connection waited for next week's hour: deletions live two weeks."""
    _, cid = _connected(start_sandbox, world, http)
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")
    tick, later = _ticks_of_one_slot(cid, 2)  # ``later`` is not the connection's own hour either (a new slot)
    key = run_key(cid, last_slot(cid, tick))
    with DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:  # a schedule's context needs its ref
        with _synced_elsewhere(world, cid):
            met = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})
        assert not met.success
        stopped = _failure_metadata(met, "not_reconciled")
        assert stopped["Patient"].startswith("connection_busy"), stopped
        assert stopped["Encounter"] == "not reached: the run stopped at Patient (connection_busy)", stopped
        tags = instance.get_run_by_id(met.run_id).tags  # type: ignore[union-attr]
        asked = _asked(world, instance, tick)
        assert asked == [(cid, key)]
        assert tags.get(HELD_TAG) == "busy", tags

        again = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})  # the lock is free now
        assert again.success
        assert _asked(world, instance, later) == []  # reconciled: not asked again


def test_a_reconcile_found_busy_is_deferred_without_a_run_until_the_connection_is_free_bdx31(
    start_sandbox,
    world: SyncWorld,
    http: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync holds the connection's lock for more than ``MAX_HELD_RUNS`` hours (a long full sync, or syncs back to
    back): the week's run finds it busy; each hourly tick while the lock is held asks for no run (its log says the
    reconcile is deferred, and by whom), and the first tick after the lock is let go asks for the slot, whose run
    reconciles. Before, every tick asked for a run that found the connection busy again, a Dagster run each; after
    ``MAX_HELD_RUNS`` of them the slot was asked for no more, and the week's deletions stayed live two weeks."""
    _, cid = _connected(start_sandbox, world, http)
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")
    *busy_ticks, free_tick, later = _ticks_of_one_slot(cid, MAX_HELD_RUNS + 3)
    key = run_key(cid, last_slot(cid, free_tick))
    log = _TickLog()
    spent = []  # the runs the ticks asked for while the connection was busy, each run as the daemon would
    with DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:  # a schedule's context needs its ref
        with _synced_elsewhere(world, cid):
            assert not run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key}).success
            for tick in busy_ticks:
                for _, asked_key in _asked(world, instance, tick, log):
                    spent.append(run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: str(asked_key)}))
        deferred = [line for line in log.lines if "deferred" in line]
        asked = _asked(world, instance, free_tick)
        assert asked == [(cid, key)], f"{len(spent)} runs spent while busy"
        assert spent == []
        assert len(deferred) == len(busy_ticks) and "run-syncing" in deferred[0] and key in deferred[0], deferred
        assert run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key}).success
        assert _asked(world, instance, later) == []  # reconciled: not asked again


def test_a_weeks_reconcile_asked_for_again_reconciles_only_the_types_not_finished_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """The week's run reconciles Patient and Encounter, then a 50-minute throttle stops it at Observation. Asked
    for again once the hold ends (same run key), the run lists Observation and the types after it, not Patient or
    Encounter again: each ask spent calls on the types already done, against a quota that runs out at the same
    type up to ``MAX_HELD_RUNS`` times. A type reconciled earlier in the same week stays so (its tombstones and
    read-backs are stored); next week's run lists every type again."""
    sb, cid, key = _throttled_at_observation(start_sandbox, world, http)
    with DagsterInstance.ephemeral() as instance:
        met = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})
        assert not met.success and "Encounter" not in _failure_metadata(met, "not_reconciled")
        _hold_ends(world, sb, cid)
        request_log.clear()
        again = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})
    assert again.success, [e.step_failure_data for e in again.all_events if e.event_type_value == "STEP_FAILURE"]
    paths = {url.path.split("/")[2] for url in request_log.urls if url.path.startswith("/fhir/")}
    assert "Observation" in paths and not paths & {"Patient", "Encounter"}, paths
    said = again.output_for_node("reconcile_connection")
    assert "Patient" not in said and "Observation" in said, said  # ``deleted``: the types this run reconciled


def _set_granted_scopes(world: SyncWorld, connection_id: str, scope: str) -> None:
    """The connection's stored grant, as a (re-)authorization stores the token response's ``scope``."""
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        row.granted_scopes = scope
        session.commit()


def test_a_type_the_grant_left_out_is_reconciled_when_asked_for_again_after_the_grant_widened_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    """The week's run skips Encounter, which the grant does not cover (no error: a standing condition), then a
    throttle stops it at Observation. The patient authorizes again, Encounter granted, and the hold ends: the slot's
    run asked for again lists Encounter. Before, the first run's ``deleted`` named Encounter with no error, so it
    counted as reconciled that week and was skipped: its deletions stayed live another week."""
    sb, cid, key = _throttled_at_observation(start_sandbox, world, http)
    granted = " ".join(f"patient/{t}.rs" for t in PATIENT_TYPES if t != "Encounter")
    _set_granted_scopes(world, cid, f"launch/patient openid fhirUser offline_access {granted}")
    with DagsterInstance.ephemeral() as instance:
        met = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})
        assert not met.success and "Encounter" not in _failure_metadata(met, "not_reconciled")
        _set_granted_scopes(world, cid, PATIENT_SCOPE)  # authorized again: every type
        _hold_ends(world, sb, cid)
        request_log.clear()
        again = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})
    assert again.success, [e.step_failure_data for e in again.all_events if e.event_type_value == "STEP_FAILURE"]
    paths = {url.path.split("/")[2] for url in request_log.urls if url.path.startswith("/fhir/")}
    assert "Encounter" in paths and "Patient" not in paths, paths
