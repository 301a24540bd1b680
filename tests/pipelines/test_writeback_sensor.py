"""The write-back in Dagster: ``note_outbox_sensor`` (off by default, cursor, run key from note id + version, tags)
and one real run of the ``write_back_note`` job in-process against the sandbox (issue 13)."""

from __future__ import annotations

import logging
from datetime import timedelta

import orjson
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
)
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import update

from engine.run_tags import CONNECTION_TAG, SOURCE_TAG
from engine.writeback import write_note
from pipelines.definitions import build_definitions
from pipelines.defs.writeback.jobs import NOTE_OUTBOX_KEY, WRITEBACK_JOB
from pipelines.defs.writeback.sensors import NOTE_TAG, note_outbox_sensor
from store.models import NoteOutbox, utcnow
from store.outbox import get_note, transition
from tests.engine.writeback_helpers import enqueue, server_notes, writable_connection
from tests.pipelines.outbox_runs import ON, run_requested, tick_outbox
from warehouse.note_outbox import read_note_outbox


def test_sensor_is_off_by_default_and_loaded_with_the_code_location(world) -> None:
    assert note_outbox_sensor.default_status == DefaultSensorStatus.STOPPED
    defs = build_definitions(env={"EHRSYNC_STATE_DIR": str(world.env.zone.root.parent), "SMART_ENABLE_WRITE": "1"})
    assert defs.resolve_job_def("write_back_note").name == "write_back_note"
    assert defs.resolve_sensor_def("note_outbox_sensor").default_status == DefaultSensorStatus.STOPPED


def test_sensor_requests_one_run_per_note_version_with_a_cursor(world, sandbox, http, dagster_instance) -> None:
    conn = writable_connection(world, sandbox, http)
    first, second = enqueue(world, conn), enqueue(world, conn)
    tick = tick_outbox(dagster_instance, world, None)
    keys = [r.run_key for r in tick.run_requests or []]
    assert keys == [f"note:{first.id}:v1", f"note:{second.id}:v1"]
    request = (tick.run_requests or [])[0]
    assert request.tags[CONNECTION_TAG] == conn and request.tags[SOURCE_TAG] == "generic"
    assert request.tags[NOTE_TAG] == first.id
    assert orjson.loads(tick.cursor or "")["after"] == second.next_attempt_at.isoformat()
    # Still pending on the next tick: the same run keys (Dagster runs a key once); a retried note is a new key.
    later = transition(world.env.db, first, "sending")
    retried = transition(world.env.db, later, "pending", next_attempt_at=utcnow() - timedelta(seconds=1))
    tick2 = tick_outbox(dagster_instance, world, tick.cursor)
    assert sorted(r.run_key for r in tick2.run_requests or []) == sorted(
        [f"note:{first.id}:v{retried.version}", f"note:{second.id}:v1"]
    )
    assert tick2.cursor == tick.cursor  # the retried note is due earlier than the cursor: found by the lookback


def test_one_real_write_back_run_in_process(world, sandbox, http, dagster_instance) -> None:
    """DWB-60: the sensor asks for a run of the pending note; the Dagster op writes it, and nothing is left pending."""
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    [request] = tick_outbox(dagster_instance, world, None).run_requests or []
    result = run_requested(world, dagster_instance, request)
    assert result.success
    done = get_note(world.env.db, note.id)
    assert done is not None and done.state == "written"
    assert [d["id"] for d in server_notes(world, conn, sandbox, note)] == [done.ehr_resource_id]
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == NOTE_OUTBOX_KEY]
    metadata = event.materialization.metadata
    assert metadata["written"].value == 1 and metadata["pending"].value == 0
    assert tick_outbox(dagster_instance, world, None).run_requests == []  # nothing pending any more
    with world.env.warehouse() as wh:  # analysts see the outbox in the warehouse, without the note's text
        [row] = read_note_outbox(wh)
    assert (row["id"], row["state"], row["ehr_resource_id"]) == (note.id, "written", done.ehr_resource_id)
    assert "body" not in row and "title" not in row


def _age(world, note_id: str, seconds: float) -> None:
    with world.env.db.session() as session:
        session.execute(
            update(NoteOutbox).where(NoteOutbox.id == note_id).values(updated_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


def test_a_note_left_sending_is_asked_for_again_each_stalled_period(world, sandbox, http, dagster_instance) -> None:
    """DWB-60: a claim's lease ends with its run: a note left ``sending`` is asked for once it has not moved for
    ``stalled_after_s``. A resumed run that cannot move the note (EHR unreachable, killed again) leaves its version
    as it was; Dagster runs a run key once, so each further stalled period must be a new key or the note stays
    ``sending`` forever."""
    conn = writable_connection(world, sandbox, http)
    sending = transition(world.env.db, enqueue(world, conn), "sending")
    assert tick_outbox(dagster_instance, world, None).run_requests == []  # not stalled yet
    stalled_after = ON.config().stalled_after_s
    _age(world, sending.id, stalled_after + 60)
    [first] = tick_outbox(dagster_instance, world, None).run_requests or []
    assert first.run_key == f"note:{sending.id}:v{sending.version}:r1"
    assert [r.run_key for r in tick_outbox(dagster_instance, world, None).run_requests or []] == [first.run_key]
    _age(world, sending.id, 2 * stalled_after + 60)  # that run died too: the note is still sending, same version
    [again] = tick_outbox(dagster_instance, world, None).run_requests or []
    assert again.run_key == f"note:{sending.id}:v{sending.version}:r2"


def test_a_pending_note_whose_run_died_is_asked_for_again(world, sandbox, http, dagster_instance) -> None:
    """A run that died before moving its note (launch failure, a crash before ``sending``) leaves it pending at the
    same version: a stalled period after its due time it is asked for under a new key, past the cursor's lookback."""
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    first = tick_outbox(dagster_instance, world, None)
    assert [r.run_key for r in first.run_requests or []] == [f"note:{note.id}:v1"]
    stalled_after = ON.config().stalled_after_s
    with world.env.db.session() as session:
        due = utcnow() - timedelta(seconds=stalled_after + 60)
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note.id).values(next_attempt_at=due))
        session.commit()
    later = orjson.dumps({"after": utcnow().isoformat()}).decode()  # newer notes moved the cursor on meanwhile
    [again] = tick_outbox(dagster_instance, world, later).run_requests or []
    assert again.run_key == f"note:{note.id}:v1:r1"


def test_a_run_for_a_version_the_note_has_left_sends_nothing(world, sandbox, http) -> None:
    """Two runs of one note (a late duplicate): the one asked for v1 finds it taken (sending v2) and leaves it."""
    conn = writable_connection(world, sandbox, http)
    taken = transition(world.env.db, enqueue(world, conn), "sending")
    left = write_note(world.env, ON.config(), taken.id, version=1)
    assert (left.state, left.version) == ("sending", taken.version)
    assert server_notes(world, conn, sandbox, taken) == []


def _queue(instance: DagsterInstance, request: RunRequest) -> None:
    """The run ``request`` asked for, waiting in the run queue (the per-source limit holds it back)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ehrsync"), "__repository__"),
        job_name=WRITEBACK_JOB,
    )
    create_run_for_test(
        instance,
        job_name=WRITEBACK_JOB,
        status=DagsterRunStatus.QUEUED,
        run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key or ""},
        remote_job_origin=origin,
    )


def test_a_note_whose_run_waits_in_the_queue_is_not_asked_for_again(world, sandbox, http, dagster_instance) -> None:
    """A run held in the queue (2 runs per EHR source) has not died: its note, still ``pending`` (or ``sending``) a
    stalled period on, must not get a second run under a resume key, nor a third the period after."""
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    [first] = tick_outbox(dagster_instance, world, None).run_requests or []
    _queue(dagster_instance, first)
    stalled_after = ON.config().stalled_after_s
    with world.env.db.session() as session:
        due = utcnow() - timedelta(seconds=2 * stalled_after + 60)
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note.id).values(next_attempt_at=due))
        session.commit()
    assert tick_outbox(dagster_instance, world, None).run_requests == []
    sending = transition(world.env.db, enqueue(world, conn), "sending")  # its resume run queued, then a period on
    _age(world, sending.id, stalled_after + 60)
    [resume] = tick_outbox(dagster_instance, world, None).run_requests or []
    assert resume.run_key == f"note:{sending.id}:v{sending.version}:r1"
    _queue(dagster_instance, resume)
    _age(world, sending.id, 2 * stalled_after + 60)
    assert tick_outbox(dagster_instance, world, None).run_requests == []
    # Once the queued run has ended without moving the note (it died), the next period asks again.
    [queued] = dagster_instance.get_runs(filters=RunsFilter(tags={NOTE_TAG: sending.id}))
    dagster_instance.report_run_failed(queued)
    [again] = tick_outbox(dagster_instance, world, None).run_requests or []
    assert again.run_key == f"note:{sending.id}:v{sending.version}:r2"


def test_a_note_held_by_an_unreadable_capability_statement_is_told_in_the_run(
    world, sandbox, http, dagster_instance
) -> None:
    """The operator sees why the run's note waits: the run's output metadata carries the note's reason and when it is
    due again, and the run logs a warning with the error code. Before, the metadata said ``pending`` and
    ``fhir_server_error`` only, nothing was logged, and the note's reason was empty."""
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    sandbox.admin.set_fault("500", path="/fhir/metadata", times=None)
    [request] = tick_outbox(dagster_instance, world, None).run_requests or []
    result = run_requested(world, dagster_instance, request)
    assert result.success
    held = get_note(world.env.db, note.id)
    assert held is not None and held.state == "pending" and held.attempts == 0
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    assert metadata["reason"].value == held.reason
    assert metadata["reason"].value.startswith("the EHR's CapabilityStatement could not be read (fhir_server_error")
    assert metadata["next_attempt_at"].value == held.next_attempt_at.isoformat()
    warned = [e.user_message for e in dagster_instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any(note.id in m and "fhir_server_error" in m for m in warned), warned
