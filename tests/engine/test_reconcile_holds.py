"""The weekly deletion reconciliation (BDX-31) and its source's throttle (vendors.md §4, BDX-10), through the real
job over a sandbox: a reconcile that meets a throttle longer than ehrsync waits notes the time the source named on
the connection's newest ``sync_runs`` row (a reconcile has none of its own), as a sync's landing step does, so the
scheduler asks for nothing before it; and the weekly reconcile of a connection so held sends nothing, failing
"held until", tagged ``ehrsync/held`` (the schedule asks for its slot again once the hold ends), as is the week's
run such a throttle stopped partway. Before, the
reconcile noted no hold and was sent into one the source had already named. A person's reconcile (``ehrsync
reconcile``, a launch from the Dagster UI) is tried at once, as a person's sync is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, build_schedule_context
from dagster._core.storage.tags import RUN_KEY_TAG

from engine import runs
from engine.retries import source_holds
from engine.run_tags import TRIGGER_TAG
from pipelines.defs.maintenance.jobs import RECONCILE_TRIGGER, weekly_reconcile_schedule
from pipelines.defs.maintenance.reconcile_slots import HELD_TAG, last_slot, run_key
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import run_reconcile, schedule_resources, sync_type

_WEEKLY = {TRIGGER_TAG: RECONCILE_TRIGGER}  # what the weekly schedule tags its runs with


def _fhir_requests(request_log: RequestLog) -> int:
    return sum(1 for url in request_log.urls if url.path.startswith("/fhir"))


def test_a_reconcile_notes_the_throttle_it_meets_and_the_next_one_sends_nothing_into_it_bdx10(
    start_sandbox, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert sync_type(world, cid, "Patient").error is None  # the connection's newest sync_runs row
    (synced,) = runs.history(world.env.db, cid)
    assert synced.not_before is None
    add_fault(http, sb, "429", path="/fhir/Patient", retry_after="3000", times=None)  # 50 min: past what ehrsync waits
    before = datetime.now(UTC)
    with DagsterInstance.ephemeral() as instance:
        met = run_reconcile(world, cid, instance)
        assert not met.success
        noted = runs.get(world.env.db, synced.id)
        assert noted is not None and noted.not_before is not None, noted
        until = noted.not_before.replace(tzinfo=UTC)
        assert before + timedelta(minutes=45) < until <= datetime.now(UTC) + timedelta(minutes=50), until
        assert source_holds(world.env.db)[cid].until == until  # what the scheduler honours

        request_log.clear()
        held = run_reconcile(world, cid, instance, tags=_WEEKLY)
        tags = {r.run_id: r.tags for r in instance.get_runs()}
    assert HELD_TAG not in tags[met.run_id] and tags[held.run_id][HELD_TAG] == "true"  # the schedule asks again
    assert not held.success
    assert _fhir_requests(request_log) == 0, request_log.urls  # before: the listing was sent into the throttle
    (failure,) = [e for e in held.all_events if e.event_type_value == "STEP_FAILURE"]
    said = str(failure.step_failure_data.user_failure_data.description)
    assert f"reconciliation of connection {cid} not tried: its source is held until {until:%Y-%m-%dT%H:%M:%SZ}" in (
        said
    ), said


@pytest.mark.parametrize(
    "tags",
    [{TRIGGER_TAG: "manual"}, {}, {HELD_TAG: "true"}],
    ids=["ehrsync_reconcile", "ui_launch", "ui_launch_of_a_held_runs_tags"],
)
def test_a_persons_reconcile_is_tried_at_once_whatever_the_hold_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client, request_log: RequestLog, tags: dict[str, str]
) -> None:
    """An operator asking for a reconcile while the connection's newest row holds a time still to come: it lists
    ids and reconciles (before: refused "held until" for up to a day, though TROUBLESHOOTING.md says an operator's
    run is not held, and `ehrsync reconcile` had no way to ask sooner)."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert sync_type(world, cid, "Patient").error is None
    (synced,) = runs.history(world.env.db, cid)
    runs.hold_until(world.env.db, synced.id, datetime.now(UTC) + timedelta(hours=1))
    request_log.clear()
    with DagsterInstance.ephemeral() as instance:
        asked = run_reconcile(world, cid, instance, tags=tags)
        said = instance.get_runs()[0].tags
    assert said.get(HELD_TAG, "false") == "false"  # it tried: the schedule does not ask for its slot again
    assert asked.success, [e.step_failure_data for e in asked.all_events if e.event_type_value == "STEP_FAILURE"]
    assert _fhir_requests(request_log) > 0, "nothing was asked of the EHR"


def test_a_weeks_reconcile_its_throttle_stopped_partway_is_asked_for_again_once_the_hold_ends_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client, tmp_path: Path
) -> None:
    """The week's run (the schedule's tags and its slot's run key) reconciles Patient and Encounter, then meets a
    50-minute throttle at Observation: the types after it are not reached. It is tagged ``ehrsync/held=true``, so
    the real schedule's first tick after the noted hold ends asks for the slot again with its run key. Before,
    only a run held before any request was, and Observation and every later type waited for next week's hour:
    their deletions stayed live two weeks."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert sync_type(world, cid, "Patient").error is None
    add_fault(http, sb, "429", path="/fhir/Observation", retry_after="3000", times=None)
    slot = last_slot(cid, _next_hour(datetime.now(UTC) + timedelta(seconds=3000)))
    with DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:  # a schedule's context needs its ref
        met = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: run_key(cid, slot)})
        assert not met.success
        (row,) = runs.history(world.env.db, cid)
        assert row.not_before is not None, "the throttle was not noted"
        tick = _next_hour(row.not_before.replace(tzinfo=UTC))
        with build_schedule_context(
            instance=instance, scheduled_execution_time=tick, resources=schedule_resources(world)
        ) as context:
            asked = weekly_reconcile_schedule(context)
        tags = instance.get_run_by_id(met.run_id).tags  # type: ignore[union-attr]
    reached = _output_metadata(met, "not_reconciled")
    assert set(reached) >= {"Observation", "Condition"} and "Encounter" not in reached, reached  # partway
    assert isinstance(asked, list)
    assert [(r.partition_key, r.run_key) for r in asked] == [(cid, run_key(cid, last_slot(cid, tick)))]
    assert tags.get(HELD_TAG) == "true"


def test_a_weeks_reconcile_of_a_connection_with_no_sync_row_is_not_tagged_held_bdx31(
    start_sandbox, world: SyncWorld, http: httpx.Client
) -> None:
    """A connection never synced (no ``sync_runs`` row: its first sync not yet started) has nowhere to note the
    throttle its week's run met partway, so no hold of it ever ends for the schedule to ask for the slot again:
    the run is not tagged ``ehrsync/held=true`` (before, it was, though nothing would ever ask again). Nothing is
    lost: with nothing synced there is nothing to tombstone, and the first sync reads every type."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert runs.history(world.env.db, cid) == []
    add_fault(http, sb, "429", path="/fhir/Observation", retry_after="3000", times=None)
    key = run_key(cid, last_slot(cid, datetime.now(UTC)))
    with DagsterInstance.ephemeral() as instance:
        met = run_reconcile(world, cid, instance, tags=_WEEKLY | {RUN_KEY_TAG: key})
        tags = instance.get_run_by_id(met.run_id).tags  # type: ignore[union-attr]
    assert "Observation" in _output_metadata(met, "not_reconciled")  # stopped there, by the source's throttle
    assert runs.history(world.env.db, cid) == []  # nowhere to note it
    assert tags.get(HELD_TAG, "false") == "false", tags


def _next_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _output_metadata(result: ExecuteInProcessResult, name: str) -> dict[str, str]:
    """A failed op's failure metadata entry ``name`` (a JSON mapping)."""
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    value = failure.step_failure_data.user_failure_data.metadata[name].value
    assert isinstance(value, dict)
    return value
