"""DWB-50: an EHR naming a note, Binary or Provenance by an id that is no FHIR id (``[A-Za-z0-9-.]{1,64}``: here
70 characters, sandbox ``created_id_prefix``). The outbox stores ids of 64 characters: before, storing such an id
failed on PostgreSQL after the note was in the EHR, and on every run of the note after. Now the note is ``written``
with its id unknown (``id_unknown``), no Provenance, never POSTed again. Over the sandbox on a real socket, on
SQLite and a throwaway PostgreSQL (``slot_world``)."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import update

from engine.writeback import write_note
from sandbox import SandboxServer
from store.models import NoteOutbox
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld
from tests.engine.writeback_helpers import (
    FAST,
    WRITE_SCOPE,
    binary_pdf_note,
    enqueue,
    server_notes,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"
BINARY_POSTS = "/fhir/Binary"
PREFIX = "L" * 62  # + "new1xdoc": a 70-character id
PROV_SCOPE = f"{WRITE_SCOPE} patient/Provenance.c"


def _no_id_text(reason: str | None) -> None:
    assert reason is not None and "not a FHIR id" in reason and "characters long" in reason, reason
    assert PREFIX not in reason  # its length is said, never its text


def test_dwb50_a_create_answer_naming_a_70_character_id_is_written_with_its_id_unknown(
    slot_world, start_sandbox, http, request_log
) -> None:
    world = slot_world
    ehr = start_sandbox(provenance_create=True, created_id_prefix=PREFIX)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown"), done.reason
    _no_id_text(done.reason)
    assert (done.ehr_version_id, done.provenance_id, done.last_http_status) == (None, None, 201)
    assert write_note(world.env, FAST, note.id).state == "written"  # a later run: nothing to do, no error
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
    assert request_log.paths("/fhir/Provenance", "POST") == []  # it would need the note's id


def test_dwb50_a_lost_answer_found_by_identifier_under_a_70_character_id_is_written_with_its_id_unknown(
    slot_world, start_sandbox, http, request_log
) -> None:
    world = slot_world
    ehr = start_sandbox(conditional_create=False, created_id_prefix=PREFIX)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)  # stored, answer lost: the search finds it
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown"), done.reason
    _no_id_text(done.reason)
    assert write_note(world.env, FAST, note.id).state == "written"
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb18_50_a_binary_named_by_a_70_character_id_fails_the_note_at_once_never_posted_again(
    slot_world, start_sandbox, http, request_log
) -> None:
    """The EHR created the Binary and named it by an id no note can reference. Before, it was taken as a Binary
    created without an id: POSTed again on each try up to ``binary_posts_max``, each left in the EHR unreferenced
    (holding the note's text), the EHR naming each the same way. Now the note is ``failed`` ``binary_id_not_fhir`` at
    once, its reason naming the problem (never the id), one Binary POSTed, the note itself never."""
    world = slot_world
    ehr = start_sandbox(created_id_prefix=PREFIX)
    _, note = binary_pdf_note(world, ehr, http)
    config = replace(FAST, inline_max_bytes=100, max_attempts=10)
    done = write_note(world.env, config, note.id)
    for _ in range(config.binary_posts_max + 1):  # before: pending, POSTed again, run after run
        if done.state != "pending":
            break
        done = write_note(world.env, config, note.id)
    assert (done.state, done.reason_code, done.binary_id) == ("failed", "binary_id_not_fhir", None), done.reason
    assert done.last_http_status == 201  # the Binary's answer, kept as a refusal's is (before: none)
    _no_id_text(done.reason)
    assert done.reason is not None and "Binary" in done.reason
    assert write_note(world.env, config, note.id).state == "failed"  # a later run sends nothing
    assert len(request_log.paths(BINARY_POSTS, "POST")) == 1
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_dwb31_50_a_lost_answer_whose_conditional_repeat_names_a_70_character_id_is_written_once(
    slot_world, start_sandbox, http, request_log
) -> None:
    """With conditional create the lost answer's POST is repeated with If-None-Exist (DWB-31): the EHR answers 200
    naming the note it holds by a 70-character id; ``written`` / ``id_unknown``, one note in the EHR."""
    world = slot_world
    ehr = start_sandbox(created_id_prefix=PREFIX)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown"), done.reason
    _no_id_text(done.reason)
    assert request_log.posts_conditional(DOC_POSTS) == [True, True]
    assert len(server_notes(world, conn, ehr, note)) == 1


def _found_under_a_number_id(world: SyncWorld, ehr: SandboxServer, note_id: str, request_log: RequestLog) -> None:
    """The note's POST stored and its answer lost; the search that finds it names its ``id`` as a JSON number (FHIR
    forbids it): that is the EHR holding it, so ``written`` / ``id_unknown``, never POSTed again."""
    ehr.admin.set_fault("search_shape", path=DOC_POSTS, method="GET", times=None, shape="number_ids")
    done = write_note(world.env, FAST, note_id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown"), done.reason
    assert done.reason is not None and "a JSON int rather than a string" in done.reason, done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb50_a_lost_answer_found_by_identifier_under_a_number_id_is_written_with_its_id_unknown(
    slot_world, start_sandbox, http, request_log
) -> None:
    """The identifier search finds the note, its ``id`` a JSON number (FHIR forbids it): that is the EHR holding
    it, so ``written`` / ``id_unknown`` (before, such a match was not counted and the note was left ``unknown``)."""
    world = slot_world
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)  # stored, answer lost: the search finds it
    _found_under_a_number_id(world, ehr, note.id, request_log)


def test_dwb32_50_a_lost_note_found_by_patient_type_and_date_under_a_number_id_is_written_with_its_id_unknown(
    slot_world, start_sandbox, http, request_log
) -> None:
    """As above where the identifier cannot decide (dropped on create, its search ignored): the patient, type and
    date search finds the note exactly, its ``id`` a JSON number; ``written`` / ``id_unknown``, never POSTed again."""
    world = slot_world
    dropping = {"create_drops_fields": ["identifier"], "ignored_search_params": ["identifier"]}
    ehr = start_sandbox(conditional_create=False, report_ignored_params="self_link", **dropping)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    _found_under_a_number_id(world, ehr, note.id, request_log)


def test_dwb32_50_a_note_written_with_its_long_id_unknown_is_never_taken_for_its_twins(
    slot_world, start_sandbox, http, request_log
) -> None:
    """Two drafts of one patient, type, second and text on an EHR that drops the identifier and names 70-character
    ids: the first is ``written`` / ``id_unknown`` (no id kept to tell its note by), the second's POST is lost before
    the EHR stored it. The patient/type/date search finds only the first's note: it may be either's, so the second
    is left ``unknown`` for a person, never ``written`` as it (it never reached the EHR: lost silently)."""
    world = slot_world
    dropping = {"create_drops_fields": ["identifier"], "ignored_search_params": ["identifier"]}
    ehr = start_sandbox(
        conditional_create=False, report_ignored_params="self_link", created_id_prefix=PREFIX, **dropping
    )
    conn = writable_connection(world, ehr, http)
    first = write_note(world.env, FAST, enqueue(world, conn).id)
    assert (first.state, first.reason_code) == ("written", "id_unknown")
    second = enqueue(world, conn)
    with world.env.db.session() as session:  # two drafts of one visit, filed in the same second
        session.execute(update(NoteOutbox).where(NoteOutbox.id == second.id).values(created_at=first.created_at))
        session.commit()
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)  # the second's POST, lost before the EHR stored it
    done = write_note(world.env, FAST, second.id)
    assert (done.state, done.ehr_resource_id) == ("unknown", None), done.reason
    assert done.reason is not None and "another draft of the same patient" in done.reason, done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2  # no resend


def test_dwb50_a_location_carrying_a_jsessionid_names_the_note_by_its_id(
    slot_world, start_sandbox, http, request_log
) -> None:
    """A Java server's create answer: ``Location: .../DocumentReference/<id>;jsessionid=...`` (RFC 3986 §3.3 segment
    parameters, its servlet container rewriting URLs), no ``/_history``, no body, the version in the ETag. Before, the
    segment with its parameter was taken for the id, no FHIR id, so the note was ``written`` / ``id_unknown``, without
    Provenance. Now the parameter is dropped: the id and version are learned, the Provenance sent."""
    world = slot_world
    params = {"create_unversioned_location": True, "create_location_params": ";jsessionid=1A2B3C4D"}
    ehr = start_sandbox(provenance_create=True, **params)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.reason_code, done.ehr_resource_id) == ("written", None, doc["id"]), done.reason
    assert done.ehr_version_id == "1" and done.provenance_id is not None
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb50_a_semicolon_the_answer_shows_is_the_ids_own_is_no_parameter(
    slot_world, start_sandbox, http, request_log
) -> None:
    """A server naming ids with a ``;`` in them (no FHIR id): its ``Location`` ``.../DocumentReference/s;new1xdoc/...``
    reads as id ``s`` with a parameter, but the body it answers names ``s;new1xdoc``. Before, ``s`` was taken for
    the note's id (another resource's, or none), stored, and a Provenance sent for it; now the body's word stands:
    ``written`` / ``id_unknown``, as for any id that is no FHIR id, no Provenance."""
    world = slot_world
    ehr = start_sandbox(provenance_create=True, created_id_prefix="s;")
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown"), done.reason
    assert done.reason is not None and "s;" not in done.reason, done.reason
    assert request_log.paths("/fhir/Provenance", "POST") == []
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


#: A create answered ``Location: .../{type}/{id}/``, no ``/_history``, no body (the version in the ETag)
TRAILING_SLASH = {"create_unversioned_location": True, "create_location_params": "/"}


def test_dwb50_a_location_ending_in_a_slash_after_the_id_names_the_note(slot_world, start_sandbox, http) -> None:
    """``Location: .../DocumentReference/<id>/`` on a server that says it ignores the identifier search. Before, the
    empty segment after the ``/`` named no id, the search could not find it: ``written`` / ``id_unknown``, no
    Provenance. Now ``[type]/[id]/`` names the id (no FHIR id is empty): written with it, the Provenance sent."""
    world = slot_world
    ignores = {"ignored_search_params": ["identifier"], "report_ignored_params": "outcome"}
    ehr = start_sandbox(provenance_create=True, **TRAILING_SLASH, **ignores)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    ehr.admin.settings(ignored_search_params=[])  # for the test's own search of the note
    [doc] = server_notes(world, conn, ehr, done)
    assert (done.state, done.reason_code, done.ehr_resource_id) == ("written", None, doc["id"]), done.reason
    assert done.ehr_version_id == "1" and done.provenance_id is not None


def test_dwb18_50_a_binary_named_by_a_location_ending_in_a_slash_is_referenced(
    slot_world, start_sandbox, http, request_log
) -> None:
    """``Location: .../Binary/<id>/``: the Binary's id, referenced by the note (before, it named none, and the note
    was failed ``binary_id_unknown``, its Binary left unreferenced in the EHR)."""
    world = slot_world
    ehr = start_sandbox(**TRAILING_SLASH)
    conn, note = binary_pdf_note(world, ehr, http)
    done = write_note(world.env, replace(FAST, inline_max_bytes=100), note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{done.binary_id}" and done.binary_id
    assert len(request_log.paths(BINARY_POSTS, "POST")) == 1


def test_dwb18_50_a_binary_whose_location_names_only_its_collection_is_referenced_by_its_body_id(
    slot_world, start_sandbox, http, request_log
) -> None:
    """``Location: [base]/Binary`` (sandbox ``create_collection_location``: the type's collection, no id), the Binary
    in the body. Before, the type was taken for the id, over the body's: the note referenced ``Binary/Binary``, which
    holds nothing of it (the sandbox refuses that; an EHR not checking would file it), its own Binary unreferenced.
    Now the body's id is the Binary's."""
    world = slot_world
    ehr = start_sandbox(create_collection_location=True)
    conn, note = binary_pdf_note(world, ehr, http)
    done = write_note(world.env, replace(FAST, inline_max_bytes=100), note.id)
    assert done.state == "written" and done.binary_id not in (None, "Binary"), (done.binary_id, done.reason)
    [doc] = server_notes(world, conn, ehr, note)
    assert done.ehr_resource_id == doc["id"] and doc["content"][0]["attachment"]["url"] == f"Binary/{done.binary_id}"
    assert len(request_log.paths(BINARY_POSTS, "POST")) == 1


def test_dwb50_a_location_naming_only_the_collection_is_no_id_for_the_note(
    slot_world, start_sandbox, http, request_log
) -> None:
    """``Location: [base]/DocumentReference`` and a body that is no JSON: before, the note was written as
    ``DocumentReference/DocumentReference``, a Provenance targeting it; now no id is named and the identifier search
    finds the note under its own."""
    world = slot_world
    # the body a gateway's page, no JSON: only the Location could name the id
    ehr = start_sandbox(provenance_create=True, create_collection_location=True, create_html_body=True)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    done = write_note(world.env, FAST, enqueue(world, conn).id)
    [doc] = server_notes(world, conn, ehr, done)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason
    assert doc["id"] != "DocumentReference" and len(request_log.paths(DOC_POSTS, "POST")) == 1
    # its Provenance, answered so too, is taken without an id (never ``Provenance``): ``ehrProvenance`` ``sent``
    [prov] = ehr.state.store.orphan_resources(["Provenance"])
    assert prov["target"][0]["reference"].startswith(f"DocumentReference/{doc['id']}/")
    assert (done.provenance_outcome, done.provenance_id, done.provenance_due_at) == ("sent", None, None)
