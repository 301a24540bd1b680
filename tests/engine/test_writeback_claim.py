"""How a write-back run claims a note (draft-note §6): a compare-and-set on (state, version), committed before any
write request (after the CapabilityStatement read), on SQLite and on a throwaway PostgreSQL. Two runs that both
read the note ``pending`` never both send it."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from engine.writeback import write_note
from store.models import AuditEvent
from store.outbox import NoteRecord
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
_HELD_S = 60.0  # the sandbox holds both runs' metadata reads at most this long; the test releases them at once


def _both_held(ehr) -> None:
    """Until the sandbox holds both runs' CapabilityStatement reads (its two-shot ``slow`` fault is spent): each run
    has then read the note as ``pending`` at its first version, and neither has claimed it."""
    deadline = time.monotonic() + 60
    while ehr.admin.faults():
        assert time.monotonic() < deadline, "the runs never reached the sandbox in 60 s"
        time.sleep(0.05)


def test_dwb60_two_runs_that_read_one_pending_note_send_it_once(slot_world, start_sandbox, http, request_log) -> None:
    """DWB-60: two runs read the same ``pending`` note (the sensor asked twice, or an operator ran one by hand) and
    both pass the gates; the claim ``pending → sending`` is a compare-and-set, so one run takes the note and the
    other moves nothing and sends nothing. The server has no conditional create: a second POST would be a second
    note in the chart."""
    world = slot_world
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("slow", path="/fhir/metadata", times=2, delay_s=_HELD_S)
    ends: list[NoteRecord] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ends.append(write_note(world.env, FAST, note.id, note.version))  # as the sensor's run asks
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    _both_held(ehr)
    ehr.admin.release_held()
    for thread in runs:
        thread.join(timeout=120)
    assert errors == [] and len(ends) == 2
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
    [doc] = server_notes(world, conn, ehr, note)
    assert sorted(e.state for e in ends) == ["sending", "written"] or [e.state for e in ends] == ["written"] * 2
    assert doc["id"] in {e.ehr_resource_id for e in ends}
    assert _claims(world, note.id) == 1


def _claims(world: Any, note_id: str) -> int:
    """Audited ``pending → sending`` moves of the note: one per claim."""
    with world.env.db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.transition")).all()
    return sum(1 for e in events if e.detail.get("note_id") == note_id and e.detail.get("from") == "pending")
