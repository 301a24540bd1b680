"""Notes whose connection cannot write now (``needs_reauth``, ``client_rejected``): ``note_outbox_sensor`` and real
``write_back_note`` runs in-process against the sandbox.

A note whose POST may already be stored waits for its connection (``pending``, reason ``connection_<status>``): it
is not asked for again every stalled period, it never fills the sensor's rows before due notes of healthy
connections, and it is asked for at once when its connection is active again, then written exactly once."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from dagster import DagsterInstance, RunRequest, SensorResult
from sqlalchemy import update

from connectors.errors import NeedsReauthError
from engine.writeback import write_note
from store.models import Connection, NoteOutbox, utcnow
from store.outbox import NoteRecord, get_note, transition
from tests.engine.writeback_helpers import enqueue, run_writeback_child, server_notes, writable_connection
from tests.pipelines.outbox_runs import ON, run_requested, tick_outbox

STALLED = ON.config().stalled_after_s
DOC_POSTS = "/fhir/DocumentReference"
#: One more than the sensor reads per query: before the fix these filled every row.
BLOCKED = 101


def _keys(result: SensorResult) -> list[str]:
    return [r.run_key or "" for r in result.run_requests or []]


def _run(world, instance: DagsterInstance, request: RunRequest) -> NoteRecord:
    """The run the sensor asked for, and the note as it left it."""
    result = run_requested(world, instance, request)
    assert result.success
    note = get_note(world.env.db, request.tags["ehrsync/note"])
    assert note is not None
    return note


def _refuse_refresh(world, sandbox, connection_id: str, error: str) -> None:
    """The EHR refuses the connection's refresh: ``invalid_grant`` makes it ``needs_reauth``, ``invalid_client``
    ``client_rejected`` (the app's credentials)."""
    sandbox.admin.set_fault("oauth_error", path="/oauth/token", times=None, error=error)
    with pytest.raises(NeedsReauthError):
        world.env.vault.force_refresh(connection_id)
    sandbox.admin.clear_faults()


def _set_status(world, connection_id: str, status: str) -> None:
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == connection_id).values(status=status))
        session.commit()


def _shift(world, note_id: str, **ago_s: float) -> None:
    """Let time pass: the note's ``next_attempt_at`` / ``updated_at`` as long ago as given."""
    values = {column: utcnow() - timedelta(seconds=s) for column, s in ago_s.items()}
    with world.env.db.session() as session:
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note_id).values(**values))
        session.commit()


def _answer_lost(world, note: NoteRecord) -> NoteRecord:
    """As a POST whose answer was lost leaves a note (``retry_later``): pending again, maybe stored, due."""
    sending = transition(world.env.db, note, "sending", attempts=1)
    due = utcnow() - timedelta(seconds=60)
    return transition(world.env.db, sending, "pending", maybe_stored=True, next_attempt_at=due)


def test_notes_waiting_for_reauthorization_never_hide_a_due_note_of_a_healthy_connection(
    world, sandbox, http, dagster_instance
) -> None:
    """101 notes of a connection that needs re-authorization, due before one note of a healthy connection: the
    healthy note's run is asked for on the first tick, and once the blocked notes' runs marked them waiting, none of
    them is asked for again."""
    blocked = writable_connection(world, sandbox, http)
    healthy = writable_connection(world, sandbox, http)
    stuck = [_answer_lost(world, enqueue(world, blocked)) for _ in range(BLOCKED)]
    _refuse_refresh(world, sandbox, blocked, "invalid_grant")
    note = enqueue(world, healthy)
    tick = first = tick_outbox(dagster_instance, world)
    assert f"note:{note.id}:v1" in _keys(first)
    for _ in range(3):  # each blocked note's run (the engine call the job makes) marks it waiting
        runs = [r.run_config["ops"]["write_note_to_ehr"]["config"] for r in tick.run_requests or []]
        if all(run["note_id"] == note.id for run in runs):
            break
        for run in runs:
            if run["note_id"] != note.id:
                write_note(world.env, ON.config(), run["note_id"], run["version"])
        tick = tick_outbox(dagster_instance, world, tick.cursor)
        assert f"note:{note.id}:v1" in _keys(tick)
    assert _keys(tick) == [f"note:{note.id}:v1"]
    waiting = [get_note(world.env.db, n.id) for n in stuck]
    assert {(w.state, w.reason_code) for w in waiting if w} == {("pending", "connection_needs_reauth")}
    [request] = [r for r in first.run_requests or [] if r.tags["ehrsync/note"] == note.id]
    assert _run(world, dagster_instance, request).state == "written"
    assert tick_outbox(dagster_instance, world, first.cursor).run_requests == []


def test_a_note_waiting_for_reauthorization_is_not_asked_for_every_period_and_is_written_once_after(
    world, sandbox, http, dagster_instance
) -> None:
    """A note whose POST was stored and its answer lost meets a grant that is gone: one run marks it waiting; stalled
    periods pass without a run; once the connection is active again the next tick asks for it and the run finds the
    stored note (If-None-Exist): ``written``, one note on the EHR."""
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    sandbox.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)  # stored, answer lost
    lost = write_note(world.env, ON.config(), note.id)
    sandbox.admin.clear_faults()
    assert (lost.state, lost.maybe_stored) == ("pending", True)
    _refuse_refresh(world, sandbox, conn, "invalid_grant")
    [first] = tick_outbox(dagster_instance, world).run_requests or []
    _run(world, dagster_instance, first)
    _shift(world, note.id, next_attempt_at=3 * STALLED + 60)  # three stalled periods on: still no run
    assert tick_outbox(dagster_instance, world).run_requests == []
    waiting = get_note(world.env.db, note.id)
    assert waiting is not None and waiting.reason is not None and "needs_reauth" in waiting.reason
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == ("pending", True, "connection_needs_reauth")
    _set_status(world, conn, "active")  # authorized again
    [again] = tick_outbox(dagster_instance, world).run_requests or []
    assert again.run_key == f"note:{note.id}:v{waiting.version}:r3"
    done = _run(world, dagster_instance, again)
    [doc] = server_notes(world, conn, sandbox, done)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert tick_outbox(dagster_instance, world).run_requests == []


def test_a_note_left_sending_waits_for_an_admin_retry_of_a_rejected_client_then_is_written_once(
    world, sandbox, http, dagster_instance, tmp_path
) -> None:
    """A run killed after the EHR stored the note leaves it ``sending``; the EHR then refuses the app's client
    (``client_rejected``). The resumed run makes it wait (not ``unknown``, not resumed every period); the admin's
    retry (``TokenVault.reactivate``) makes the connection active, and the next tick's run writes it: one note."""
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    killed = run_writeback_child(tmp_path / "state", world, note.id, "writeback.sent")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    _refuse_refresh(world, sandbox, conn, "invalid_client")
    _shift(world, note.id, updated_at=STALLED + 60)  # its run died: stalled
    [resume] = tick_outbox(dagster_instance, world).run_requests or []
    waiting = _run(world, dagster_instance, resume)
    assert (waiting.state, waiting.reason_code) == ("pending", "connection_client_rejected")
    _shift(world, note.id, updated_at=2 * STALLED + 60, next_attempt_at=2 * STALLED + 60)
    assert tick_outbox(dagster_instance, world).run_requests == []
    world.env.vault.reactivate(conn)  # the admin fixed the credentials and retried the connection
    [again] = tick_outbox(dagster_instance, world).run_requests or []
    done = _run(world, dagster_instance, again)
    [doc] = server_notes(world, conn, sandbox, done)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
