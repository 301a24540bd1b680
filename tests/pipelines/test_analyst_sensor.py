"""analyst_views_sensor over a real Dagster instance and real runs: it asks for a refresh after sync runs succeed,
at most once per debounce interval, and a tick evaluated twice asks under the same run key (Dagster drops the
duplicate)."""

from __future__ import annotations

import pytest
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorResult,
    build_sensor_context,
    job,
    op,
)

from ehrsync.run_now import run_batch_now
from pipelines.analyst_resource import AnalystResource
from pipelines.defs.analyst.sensors import AnalystCursor, analyst_views_sensor, plan_refresh
from store.models import Connection
from tests.engine.helpers import connect_patient, sandbox_patients
from tests.engine.job_runs import world_resources, world_settings


def _run(instance: DagsterInstance, job_name: str, *, succeed: bool = True) -> None:
    """A real run of a job under that name, ending in success or failure (its run-status events stored)."""

    @op(name="step")
    def _step() -> None:
        if not succeed:
            raise RuntimeError("the step failed")

    @job(name=job_name)
    def _job() -> None:
        _step()

    assert _job.execute_in_process(instance=instance, raise_on_error=False).success is succeed


def _tick(instance: DagsterInstance, cursor: str | None, min_interval_s: int = 0) -> SensorResult:
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"analyst": AnalystResource(min_interval_s=min_interval_s)}
    )
    result = analyst_views_sensor(context)
    assert isinstance(result, SensorResult) and result.cursor
    return result


def _request(result: SensorResult) -> RunRequest:
    assert result.run_requests and len(result.run_requests) == 1 and result.skip_reason is None
    request = result.run_requests[0]
    assert isinstance(request, RunRequest) and request.run_key
    return request


def _skipped(result: SensorResult) -> str:
    assert not result.run_requests and result.skip_reason is not None
    return result.skip_reason.skip_message or ""


@pytest.mark.parametrize(
    ("cursor", "newest", "scanned", "interval", "expected"),
    [
        (AnalystCursor(), None, 0, 60, (None, AnalystCursor())),  # no run ever succeeded
        (AnalystCursor(5, 500.0), None, 9, 60, (None, AnalystCursor(9, 500.0))),  # only other jobs' runs: skipped
        (AnalystCursor(5, 990.0), 6, 7, 60, (None, AnalystCursor(5, 990.0))),  # debounced: the cursor waits
        (AnalystCursor(5, 940.0), 6, 7, 60, ("analyst_views:6", AnalystCursor(7, 1000.0))),  # interval passed
        (AnalystCursor(), 6, 6, 0, ("analyst_views:6", AnalystCursor(6, 1000.0))),  # the sensor's first tick
    ],
)
def test_plan_refresh(
    cursor: AnalystCursor, newest: int | None, scanned: int, interval: int, expected: tuple[str | None, AnalystCursor]
) -> None:
    decision = plan_refresh(cursor, newest, scanned, 1000.0, interval)
    assert (decision.run_key, decision.cursor) == expected


def test_succeeded_sync_runs_request_a_refresh_once(dagster_instance: DagsterInstance) -> None:
    assert analyst_views_sensor.default_status == DefaultSensorStatus.RUNNING  # on without an operator's click
    assert "no sync run" in _skipped(_tick(dagster_instance, None))
    _run(dagster_instance, "analyst_views")
    _run(dagster_instance, "incremental_sync", succeed=False)
    assert "no sync run" in _skipped(_tick(dagster_instance, None))  # neither its own runs nor a failed sync count
    _run(dagster_instance, "incremental_sync")
    first = _tick(dagster_instance, None)
    request = _request(first)
    assert _request(_tick(dagster_instance, None)).run_key == request.run_key  # a retried tick: the same key
    assert "no sync run" in _skipped(_tick(dagster_instance, first.cursor))  # answered: nothing new

    _run(dagster_instance, "bulk_export")
    _run(dagster_instance, "reconcile_deletes")
    debounced = _tick(dagster_instance, first.cursor, min_interval_s=3600)
    assert "debounced" in _skipped(debounced) and debounced.cursor == first.cursor
    later = _tick(dagster_instance, first.cursor, min_interval_s=0)
    assert _request(later).run_key not in (None, request.run_key)
    assert "no sync run" in _skipped(_tick(dagster_instance, later.cursor))  # both runs answered by one refresh


def test_an_unreadable_cursor_starts_over() -> None:
    assert AnalystCursor.load("not json") == AnalystCursor()
    assert AnalystCursor.load('{"seen": "x"}') == AnalystCursor()
    assert AnalystCursor.load(AnalystCursor(15, 2.5).dump()) == AnalystCursor(15, 2.5)


def test_batch_runs_request_a_refresh_even_when_one_member_failed(sandbox, world, http) -> None:  # type: ignore[no-untyped-def]
    """Scheduled patient syncs run as ``incremental_sync_batch``: their members' data is in the warehouse, so the
    analyst views must follow, and a member that failed (its own row, retried alone) must not keep the others'
    data out of them."""
    good, other, broken = (
        connect_patient(world, sandbox, http=http, patient_id=p) for p in sandbox_patients(http, sandbox)[:3]
    )
    with world.env.db.session() as session:
        conn = session.get(Connection, broken)
        assert conn is not None
        conn.fhir_base = "http://127.0.0.1:9/fhir"  # nothing listens there
        session.commit()
    resources = world_resources(world)
    with DagsterInstance.ephemeral() as instance:

        def batch(ids: list[str]) -> bool:
            return run_batch_now(
                ids, "generic", settings=world_settings(world), instance=instance, resources=resources
            ).success

        assert batch([good, other])
        first = _tick(instance, None)
        _request(first)  # the batch's members were synced: a refresh
        assert not batch([good, broken])  # one member failed, the other's sync committed
        _request(_tick(instance, first.cursor))
