"""DWB-32: each field the patient, type and date fallback compares counts on its own, also where the server ignores
the search parameter that would have filtered it out; against the sandbox EHR over a real socket (the content and
label rules directly on ``same_note``, over the note as ehrsync builds it)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.fallback import same_note
from engine.writeback.preflight import build_payload
from engine.writeback.reconcile import IGNORED
from store.outbox import NoteRecord
from tests.engine.helpers import connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, first_encounter, set_tenant, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
#: The identifier dropped on create and its search ignored (said so in the self link), as DWB-33's EHR.
DROPPING = {
    "conditional_create": False,
    "create_drops_fields": ["identifier"],
    "report_ignored_params": "self_link",
}


def _client(world, conn: str, ehr) -> FhirClient:
    return FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)


def _sent(note: NoteRecord, **changes: Any) -> dict[str, Any]:
    return {**build_payload(note, "preliminary"), **changes}


def _lost_is_unknown(world, ehr, note: NoteRecord, request_log) -> None:
    """The note's POST is lost before the EHR stores it: the run leaves it ``unknown`` for a person, unsent again."""
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, IGNORED)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2  # the look-alike and the lost one: no resend


def test_dwb32_another_patients_note_listed_by_a_search_ignoring_patient_is_not_this_one(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32: the server ignores ``patient`` too, so the listing holds another patient's note of the same type,
    instant and content. Its subject is not this note's: never ``written`` with its id."""
    ehr = start_sandbox(**DROPPING, ignored_search_params=["identifier", "patient"])
    set_tenant(world)
    conn = connect_backend(world, ehr, http=http, scope="system/*.rs system/DocumentReference.c")
    mine, theirs = ehr.admin.patients()[:2]
    note = enqueue(world, conn, patient_id=mine)
    _client(world, conn, ehr).create(_sent(note, subject={"reference": f"Patient/{theirs}"}))
    _lost_is_unknown(world, ehr, note, request_log)


def test_dwb32_a_note_without_this_ones_encounter_listed_by_a_search_ignoring_encounter_is_not_this_one(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32: the note names its visit; the server ignores ``encounter``, listing the patient's note of the same
    type, instant and content that names none. It is not this note: never ``written`` with its id."""
    ehr = start_sandbox(**DROPPING, ignored_search_params=["identifier", "encounter"])
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn, encounter_id=first_encounter(world, conn, ehr))
    sent = _sent(note)
    context = {k: v for k, v in sent["context"].items() if k != "encounter"}
    _client(world, conn, ehr).create({**sent, "context": context})
    _lost_is_unknown(world, ehr, note, request_log)


@pytest.mark.parametrize(
    ("description", "title", "counts"),
    [
        ("sent", "sent", True),
        ("sent", "Another title", False),
        ("Another description", "sent", False),
        (None, "sent", False),  # neither size nor hash, and only one label: too little to tell the note
        ("sent", None, False),
    ],
)
def test_dwb32_without_size_or_hash_both_labels_must_be_the_sent_ones(
    world, start_sandbox, http, description: str | None, title: str | None, counts: bool
) -> None:
    """DWB-32: a server returning neither the attachment's ``size`` nor its ``hash`` is matched on the description
    and the attachment title: both returned, both the sent ones."""
    ehr = start_sandbox(**DROPPING)
    note = enqueue(world, writable_connection(world, ehr, http))
    sent = _sent(note)
    attachment = {k: v for k, v in sent["content"][0]["attachment"].items() if k not in ("size", "hash", "title")}
    if title is not None:
        attachment["title"] = sent["content"][0]["attachment"]["title"] if title == "sent" else title
    resource = {k: v for k, v in sent.items() if k != "description"} | {
        "id": "doc-1",
        "content": [{"attachment": attachment}],
    }
    if description is not None:
        resource["description"] = sent["description"] if description == "sent" else description
    assert same_note(resource, note, sent) is counts
