"""DWB-40 against the sandbox: the CapabilityStatement read as FHIR R4 writes it, not as one server lays it out.

R4's ``CapabilityStatement.rest`` repeats: a client entry next to the server's, or several server entries
("behaviors under different configuration settings"); cpb-9 forbids describing a type twice only within one entry.
"""

from __future__ import annotations

import pytest

from engine.writeback import write_note
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


@pytest.mark.parametrize("layout", ["client_first", "read_only_after"])
def test_dwb40_31_create_declared_in_one_of_several_rest_entries_is_written_with_if_none_exist(
    world, start_sandbox, http, request_log, layout: str
) -> None:
    """A server entry declaring DocumentReference create (and conditional create) allows the note, whatever other
    ``rest`` entries come before or after it: a client entry, or a second server entry describing the type read-only.
    Before, a later server entry describing DocumentReference replaced the first, and the note was blocked
    ``no_create_interaction``. The answer lost once, the POST is repeated with If-None-Exist and finds the note."""
    ehr = start_sandbox(capability_rests=layout)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code, done.last_http_status) == ("written", None, 200)  # the repeat matched
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2
    assert [d["id"] for d in server_notes(world, conn, ehr, note)] == [done.ehr_resource_id]
