"""DWB-61: what an outbox row keeps of the EHR's answers: the version of a note written by its answer and of one found
by the identifier search after its answer was lost, and the last HTTP status of a note out of tries; against the
sandbox over a real socket."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select

from engine.writeback import write_note
from store.models import AuditEvent
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb61_a_written_note_keeps_the_ehrs_version_whether_answered_or_found(world, start_sandbox, http) -> None:
    """A note written from its 201 and one found by the identifier search after its answer was lost (no
    conditional create) each keep the id and ``meta.versionId`` the EHR holds."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    answered = write_note(world.env, FAST, enqueue(world, conn).id)
    lost = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, its answer lost
    found = write_note(world.env, FAST, lost.id)
    for note in (answered, found):
        [doc] = server_notes(world, conn, ehr, note)
        assert note.state == "written"
        assert (note.ehr_resource_id, note.ehr_version_id) == (doc["id"], doc["meta"]["versionId"])


def test_dwb61_a_note_out_of_tries_keeps_its_last_tries_http_status(world, start_sandbox, http) -> None:
    """A note failed ``retries_exhausted`` keeps the HTTP status its last try was answered (429), not an earlier
    try's (503) nor none: the row says what the EHR last said, and the audit event of that move says it too."""
    ehr = start_sandbox()
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    config = replace(FAST, max_attempts=2)
    ehr.admin.set_fault("503", path=DOC_POSTS, method="POST", times=None, retry_after="0")
    waiting = write_note(world.env, config, note.id)
    assert (waiting.state, waiting.attempts, waiting.last_http_status) == ("pending", 1, 503), waiting.reason
    ehr.admin.clear_faults()
    ehr.admin.set_fault("429", path=DOC_POSTS, method="POST", times=None, retry_after="0")
    done = write_note(world.env, config, note.id)
    assert (done.state, done.reason_code, done.attempts) == ("failed", "retries_exhausted", 2), done.reason
    assert done.last_http_status == 429 and done.reason
    assert _last_event(world, note.id)["status_code"] == 429
    assert server_notes(world, conn, ehr, note) == []


def _last_event(world, note_id: str) -> dict[str, Any]:
    with world.env.db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.transition")).all()
    mine = [e.detail for e in events if e.detail.get("note_id") == note_id]
    return max(mine, key=lambda d: d["version"])
