"""DWB-61: the EHR's version an outbox row keeps, of a note written by its answer and of one found by the identifier
search after its answer was lost; against the sandbox over a real socket."""

from __future__ import annotations

from engine.writeback import write_note
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
