"""Answers to a note's POST that say less than they seem (draft-note §3/§5), against the sandbox EHR over a real
socket: a gateway's 503 (no Retry-After) after the EHR stored the note, and a 2xx whose body is not usable JSON."""

from __future__ import annotations

from engine.writeback import write_note
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb32_a_gateway_503_without_retry_after_after_the_ehr_stored_the_note_is_never_resent(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32, draft-note §5: only 429, or 503 *with* Retry-After, says the server did no work. A 503 without it is
    what a gateway answers after giving up on an EHR that went on to store the note: without If-None-Exist the POST
    is never repeated (not by the transport either); the note is reconciled by its identifier, one note."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("503", path=DOC_POSTS, method="POST", times=1, retry_after="", processed=True)
    done = write_note(world.env, FAST, note.id)
    docs = server_notes(world, conn, ehr, note)
    assert len(docs) == 1, f"{len(docs)} notes on the EHR for one draft"
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
    [doc] = docs
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


def test_dwb50_a_2xx_whose_body_is_not_json_is_written_with_the_location_id(world, start_sandbox, http) -> None:
    """DWB-50: the 2xx is the answer; a body that is not JSON (a gateway's HTML page) takes nothing from it. The note
    is ``written`` with the id its Location names, never ``failed`` (a person would then file it twice)."""
    ehr = start_sandbox(create_html_body=True)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id, done.last_http_status) == ("written", doc["id"], 201)
