"""What one outbox row keeps of its note (draft-note §6): who and what it is for, what it was sent with, and what
the EHR answered each time, as the write-back leaves it against the sandbox over a real socket."""

from __future__ import annotations

import uuid

from connectors.writeback.note import identifier_system
from engine.writeback import write_note
from store.models import Connection, NoteOutbox, utcnow
from store.outbox import NoteInput, enqueue_note, get_note
from tests.engine.writeback_helpers import (
    FAST,
    NOTE_TEXT,
    enqueue,
    first_encounter,
    patient_of,
    server_notes,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb61_the_row_keeps_its_note_identity_attempts_and_every_ehr_answer(world, sb, http) -> None:
    """DWB-61: tenant, connection (whose provider is the connector), patient and encounter ids, the business
    identifier, the request's hash, the attempt count, ``next_attempt_at``, the last HTTP status, the refusal's
    OperationOutcome summary and the EHR's resource id."""
    conn = writable_connection(world, sb, http)
    asked = NoteInput(
        tenant_id=world.tenant_id,
        connection_id=conn,
        idempotency_key=uuid.uuid4().hex,
        patient_id=patient_of(world, conn),
        encounter_id=first_encounter(world, conn, sb),
        title="Follow-up visit",
        content_type="text/plain; charset=utf-8",
        body=NOTE_TEXT,
        body_bytes=len(NOTE_TEXT.encode()),
        produced_by="scribe-model v3",
    )
    note, _ = enqueue_note(world.env.db, asked, actor="test")
    sb.admin.set_fault("429", path=DOC_POSTS, times=None, retry_after="0")
    before = utcnow()
    waiting = write_note(world.env, FAST, note.id)
    assert (waiting.state, waiting.attempts, waiting.last_http_status) == ("pending", 1, 429)
    assert before <= waiting.next_attempt_at <= utcnow() and waiting.reason_code == "rate_limited"
    sb.admin.clear_faults()
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.attempts, done.last_http_status) == ("written", 2, 201)
    [doc] = server_notes(world, conn, sb, note)
    row = get_note(world.env.db, note.id)
    assert row is not None and row.ehr_resource_id == doc["id"]
    assert (row.tenant_id, row.connection_id, row.patient_id) == (world.tenant_id, conn, asked.patient_id)
    assert row.encounter_id == asked.encounter_id is not None
    assert doc["identifier"] == [{"system": identifier_system(row.tenant_id), "value": row.draft_id}]
    with world.env.db.session() as session:
        connection, stored = session.get(Connection, conn), session.get(NoteOutbox, note.id)
        assert connection is not None and connection.provider_id == "generic"
        assert stored is not None and stored.request_hash == asked.request_hash()  # the payload's hash (NoteRecord
        # leaves it out: it is the idempotency check's, DWB-30)

    refused = enqueue(world, conn)
    sb.admin.set_fault("422", path=DOC_POSTS, method="POST", times=1)
    failed = write_note(world.env, FAST, refused.id)
    assert (failed.state, failed.attempts, failed.last_http_status) == ("failed", 1, 422)
    assert failed.reason_code and failed.reason and failed.ehr_resource_id is None
    assert failed.outcome_issues is not None and [i["code"] for i in failed.outcome_issues["issues"]]
