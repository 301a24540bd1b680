"""Dagster's "Re-execute from failure" of a sync run (the UI's retry, and run retries): the steps that succeeded
are not run again, so the re-executed steps must take over what the failed run left: its pending landings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import DagsterInstance

from engine import REFERENCED_TYPES, cursors, runs
from engine.retries import failure_streaks, source_holds
from engine.run_outcome import finish_sync_run
from engine.runs import SyncRunRecord
from pipelines.defs.sync import reference_assets, type_assets
from pipelines.defs.sync.jobs import INCREMENTAL_SYNC_JOB
from pipelines.defs.sync.type_assets import landing_key, warehouse_key
from store.models import Connection
from tests.engine import reexecution
from tests.engine.conftest import RequestLog
from tests.engine.helpers import add_fault, connect_patient
from tests.engine.job_runs import world_resources, world_settings
from warehouse import WarehouseError


def _fail_first_call(module: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The step's engine call fails once (a transient warehouse error), then runs for real; returns the run ids."""
    real = getattr(module, name)
    calls: list[str] = []

    def flaky(env: Any, connection_id: str, *args: Any, **kw: Any) -> Any:
        calls.append(args[-1])
        if len(calls) == 1:
            raise WarehouseError("the warehouse is locked by another process")
        return real(env, connection_id, *args, **kw)

    monkeypatch.setattr(module, name, flaky)
    return calls


def _closed_completed(world: Any, cid: str, run_id: str) -> SyncRunRecord:
    """The run-status sensor closes the re-execution's own row: the connection synced, its failure streak ends."""
    assert finish_sync_run(world.env.db, run_id, cid, succeeded=True)
    row = runs.get(world.env.db, run_id)
    assert row is not None and row.status == "completed"
    assert cid not in failure_streaks(world.env.db)
    with world.env.db.session() as session:
        assert session.get(Connection, cid).last_sync_at == row.finished_at
    return row


def _fail_then_reexecute(world: Any, cid: str, types: tuple[str, ...], calls: list[str]) -> tuple[str, str]:
    """A run of ``types`` whose step fails once (closed failed, as the run-status sensor closes it), then its
    re-execution from failure; (first run, re-execution). Only the failed step ran again."""
    reexecution.bind(world_settings(world), world_resources(world), INCREMENTAL_SYNC_JOB)
    keys = [key for t in types for key in (landing_key(t), warehouse_key(t))]
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("patient_connections", [cid])
        first, failed = reexecution.run(instance, cid, keys)
        assert failed and "locked" in failed[0]
        finish_sync_run(world.env.db, first, cid, succeeded=False, error="run failed")
        assert cid in failure_streaks(world.env.db)
        again, failed = reexecution.run(instance, cid, from_failure_of=first)
        assert not failed and calls == [first, again]
    return first, again


def test_reexecuting_a_failed_upsert_merges_the_landing_of_the_failed_run(
    world: Any, sb: Any, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The landing is not run again: the re-execution's upsert merges the first run's and moves the mark."""
    cid = connect_patient(world, sb, http=http)
    calls = _fail_first_call(type_assets, "upsert_resource_type", monkeypatch)
    _, again = _fail_then_reexecute(world, cid, ("Observation",), calls)
    assert cursors.get_mark(world.env.db, cid, cursors.REST_STREAM, "Observation") is not None
    assert _closed_completed(world, cid, again).counts["Observation"]["created"] > 0


def test_reexecuting_a_failed_reference_step_records_the_sync(
    world: Any, sb: Any, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step alone runs again: without a row of its own, its success would never reach ``last_sync_at``."""
    cid = connect_patient(world, sb, http=http)
    calls = _fail_first_call(reference_assets, "sync_references", monkeypatch)
    _, again = _fail_then_reexecute(world, cid, ("Encounter", *REFERENCED_TYPES), calls)
    assert _closed_completed(world, cid, again).counts["Practitioner"]["fetched"] > 0


def test_a_connection_s_own_run_stopped_by_its_source_s_throttle_holds_its_retries_bdx10(
    world: Any, sb: Any, http: Any, request_log: RequestLog
) -> None:
    """BDX-10: a 429 whose Retry-After is past what ehrsync waits, met by a step of a connection's own run (not a
    batch's): the step notes the time on the run's row (``not_before``, as a batch's stopped member does), the
    run's other steps send nothing, and Dagster's automatic run retry, started the moment the run failed, sends
    nothing before that time either (no request, no row); the scheduler asks for it then. Before, every step sent
    its own refused request, the row noted no time (the scheduler retried after the 5 min backoff) and the
    automatic retry went straight back into the throttle."""
    cid = connect_patient(world, sb, http=http)
    reexecution.bind(world_settings(world), world_resources(world), INCREMENTAL_SYNC_JOB)
    keys = [key for t in ("Observation", "Condition") for key in (landing_key(t), warehouse_key(t))]
    add_fault(http, sb, "429", path="/fhir", retry_after="3000", times=None)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("patient_connections", [cid])
        request_log.clear()
        first, failed = reexecution.run(instance, cid, keys)
        assert len(failed) == 2 and sum("not tried" in f for f in failed) == 1, failed
        assert len(request_log.paths("/fhir/")) == 1, "the held step sent a request into the throttle"
        finish_sync_run(world.env.db, first, cid, succeeded=False, error="run failed")  # the run-status sensor
        hold = source_holds(world.env.db)[cid].until
        assert hold > datetime.now(UTC) + timedelta(minutes=45), "the scheduler asks for nothing before it"

        request_log.clear()
        retry, failed = reexecution.reexecute(instance, first, from_failure=True, retry_number=1)
        assert failed and all("not tried" in f for f in failed)
        assert request_log.paths("/fhir/") == [], "the automatic retry sent requests into the throttle"
        assert runs.get(world.env.db, retry) is None and source_holds(world.env.db)[cid].until == hold
