"""DWB-82: after a note is written, a Provenance goes to an EHR that supports Provenance create, best effort.

Against the real sandbox: the Provenance names the new DocumentReference (with its version), the model as a
contained Device and the reviewer; a server without Provenance create gets none; a failed create leaves the
note ``written`` with an audited warning; a created one is never sent again.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from engine.writeback import write_note
from sandbox import SandboxServer
from store.models import AuditEvent
from store.outbox import get_note
from tests.engine.writeback_helpers import FAST, WRITE_SCOPE, enqueue, writable_connection

PROV_POSTS = "/fhir/Provenance"
PROV_SCOPE = f"{WRITE_SCOPE} patient/Provenance.c"


def _provenance(ehr: SandboxServer, provenance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ehr.state.store.read("Provenance", provenance_id)
    return found


def test_dwb82_83_written_note_gets_a_provenance_with_target_device_and_verifier(
    world, start_sandbox, http, request_log
) -> None:
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    note = enqueue(world, conn, author_id="pract-1", prompt_version="soap-4", source_resources=("Encounter/e1",))
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written" and done.provenance_id
    prov = _provenance(ehr, done.provenance_id)
    assert prov["target"] == [{"reference": f"DocumentReference/{done.ehr_resource_id}/_history/{done.ehr_version_id}"}]
    assert prov["activity"]["coding"][0]["code"] == "CREATE" and prov["recorded"].endswith("Z")
    [device] = prov["contained"]
    assert device["type"] == {"text": "software"}
    assert device["version"] == [{"value": "scribe-model v3 / prompt 12 / prompt soap-4"}]
    assembler, verifier = prov["agent"]
    assert assembler["type"]["coding"][0]["code"] == "assembler" and assembler["who"]["reference"] == "#model"
    assert verifier["type"]["coding"][0]["code"] == "verifier"
    assert verifier["who"] == {"reference": "Practitioner/pract-1"}
    assert "Patient reports" not in str(prov)  # ids and model only, never the note text
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1
    assert write_note(world.env, FAST, note.id).provenance_id == done.provenance_id  # never sent twice
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1
    stored = get_note(world.env.db, note.id)
    assert stored is not None and (stored.prompt_version, stored.source_resources) == ("soap-4", ["Encounter/e1"])


def test_dwb82_no_reviewer_means_no_verifier_agent(world, start_sandbox, http) -> None:
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert done.provenance_id and [
        a["type"]["coding"][0]["code"] for a in _provenance(ehr, done.provenance_id)["agent"]
    ] == ["assembler"]


def test_dwb82_server_without_provenance_create_gets_none_and_the_note_is_written(world, sb, http, request_log) -> None:
    conn = writable_connection(world, sb, http, scope=PROV_SCOPE)
    done = write_note(world.env, FAST, enqueue(world, conn, author_id="pract-1").id)
    assert (done.state, done.provenance_id) == ("written", None)
    assert request_log.paths(PROV_POSTS, "POST") == []


def test_dwb82_scopes_without_provenance_create_send_none(world, start_sandbox, http, request_log) -> None:
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.provenance_id) == ("written", None)
    assert request_log.paths(PROV_POSTS, "POST") == []


@pytest.mark.parametrize("wildcard", ["patient/*.c?category=clinical-note", "patient/*.cruds?category:text=note"])
def test_dwb82_41_a_wildcard_filtered_on_a_parameter_provenance_lacks_sends_none(
    world, start_sandbox, http, request_log, wildcard
) -> None:
    """DWB-82/41: the only scope reaching Provenance is a wildcard filtered on ``category``, which no Provenance has:
    it covers none (the rule the scopes asked for, and Binary create, follow). It was read as covering Provenance,
    and a Provenance POST went out only to be refused 403 (a warning on every note). Now none is sent."""
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http, scope=f"{WRITE_SCOPE} {wildcard}")
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (done.state, done.provenance_id) == ("written", None)
    assert request_log.paths(PROV_POSTS, "POST") == []


def test_dwb82_failed_provenance_create_leaves_the_note_written_with_a_warning(
    world, start_sandbox, http, request_log
) -> None:
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    ehr.admin.set_fault("500", path=PROV_POSTS, times=None)
    note = enqueue(world, conn, author_id="pract-1")
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.provenance_id, done.last_http_status) == ("written", None, 201)
    assert request_log.paths(PROV_POSTS, "POST")
    with world.env.db.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.provenance")).all()
        assert event.outcome == "warning" and event.detail["note_id"] == note.id
        assert event.detail["status_code"] == 500
    assert write_note(world.env, FAST, note.id).state == "written"
