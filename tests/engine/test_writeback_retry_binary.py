"""DWB-18/63: a person's retry of a note no POST of which may be stored forgets its Binary, so a note the EHR refused
because that Binary is gone gets a fresh one; a note that may be in the EHR keeps it. Against the sandbox EHR over a
real socket (fault ``binary_gone``: the EHR purged the Binary the note references, and refuses the note for it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.writeback import write_note
from store.outbox import transition
from store.outbox_retry import retry_note
from tests.engine.writeback_helpers import FAST, binary_pdf_note, server_notes

DOC_POSTS = "/fhir/DocumentReference"
BINARY_POSTS = "/fhir/Binary"
#: the test note is a 200-byte PDF: over 100 bytes it goes through a Binary created first
VIA_BINARY = replace(FAST, inline_max_bytes=100)


def test_dwb18_63_a_retried_note_refused_for_its_gone_binary_is_written_with_a_fresh_one(
    world, start_sandbox, http, request_log
) -> None:
    """Before, the retry kept ``binary_id``: its next try referenced the same gone Binary and was refused the same
    way, on every retry; only a new ``idempotencyKey`` helped."""
    ehr = start_sandbox()
    conn, note = binary_pdf_note(world, ehr, http)
    ehr.admin.set_fault("binary_gone", path=DOC_POSTS, method="POST", times=1)
    first = write_note(world.env, VIA_BINARY, note.id)
    assert (first.state, first.last_http_status) == ("failed", 422) and first.binary_id, first.reason
    retried = retry_note(world.env.db, note.id, world.tenant_id, actor="test")
    assert retried is not None and retried.state == "pending"
    done = write_note(world.env, VIA_BINARY, note.id)
    assert (done.state, done.reason_code) == ("written", None), done.reason
    assert retried.binary_id is None  # forgotten by the retry: no POST of the note may be stored
    assert done.binary_id is not None and done.binary_id != first.binary_id
    [doc] = server_notes(world, conn, ehr, note)
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{done.binary_id}"
    assert len(request_log.paths(BINARY_POSTS, "POST")) == 2 and len(request_log.paths(DOC_POSTS, "POST")) == 2


@pytest.mark.parametrize("left", ["unknown", "maybe_stored"])
def test_dwb63_a_retried_note_that_may_be_in_the_ehr_keeps_its_binary(world, start_sandbox, http, left) -> None:
    """A stored copy of the note references that Binary, and the run only repeats the POST with If-None-Exist or
    searches first: nothing is gained by a new Binary, so it is kept (the person did not confirm it absent)."""
    ehr = start_sandbox()
    _, note = binary_pdf_note(world, ehr, http)
    sending = transition(world.env.db, note, "sending", attempts=1, binary_id="kept-bin")
    if left == "unknown":
        transition(world.env.db, sending, "unknown", reason_code="response_lost")
    else:
        transition(world.env.db, sending, "failed", reason_code="fhir_unprocessable", maybe_stored=True)
    retried = retry_note(world.env.db, note.id, world.tenant_id, actor="test")
    assert retried is not None and (retried.state, retried.maybe_stored, retried.binary_id) == (
        "pending",
        True,
        "kept-bin",
    )
