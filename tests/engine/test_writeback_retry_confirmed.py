"""DWB-32/63: a person's confirmed retry (``confirmNotInEhr``) on an EHR without conditional create, through the real
auth service app, sent by the real engine to the sandbox over a real socket.

Before, such a retry was POSTed with no search at all: the person's word alone guarded it, and a note they missed
in the chart (its view lagging, filed by another person, a 202 still processing) was filed a second time. Now a note
a person confirmed absent is searched for just before any POST without If-None-Exist (``found_first``).
"""

from __future__ import annotations

from typing import Any

import pytest

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.lookup import carries_identifier
from store.models import Connection
from store.outbox import NoteRecord
from tests.engine.helpers import SyncWorld, connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, patient_notes, read_note, set_tenant, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
#: A server that ignores the identifier search and says so (its self link leaves the parameter out).
REPORTS_IGNORED = {"ignored_search_params": ["identifier"], "report_ignored_params": "self_link"}


def _copies(world: SyncWorld, conn: str, ehr: Any, note: NoteRecord) -> list[str]:
    """The ids of this draft's notes among the patient's in the EHR (filtered here: some servers ignore the search)."""
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    found = (
        r for page in client.search_pages("DocumentReference", {"patient": note.patient_id}) for r in page.resources
    )
    return [str(doc["id"]) for doc in found if carries_identifier(doc, note)]


def _epic_note(world: SyncWorld, ehr: Any, http: Any) -> tuple[str, NoteRecord]:
    """A note of an Epic backend connection (its write profile: no If-None-Exist, an encounter required)."""
    set_tenant(world)
    conn = connect_backend(world, ehr, http=http, scope="system/*.rs system/DocumentReference.c", provider_id="epic")
    patient = ehr.admin.patients()[0]
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    encounter = next(r["id"] for page in client.search_pages("Encounter", {"patient": patient}) for r in page.resources)
    return conn, enqueue(world, conn, patient_id=patient, encounter_id=encounter)


@pytest.mark.parametrize(
    ("server", "epic"),
    [({"conditional_create": False}, False), ({"conditional_create": False, **REPORTS_IGNORED}, False), ({}, True)],
    ids=["identifier_search", "patient_type_date_search", "epic_profile"],
)
def test_dwb32_63_a_wrongly_confirmed_retry_without_conditional_create_finds_the_note_and_never_posts_a_copy(
    world, start_sandbox, http, request_log, api, server: dict[str, Any], epic: bool
) -> None:
    """No conditional create (none in the CapabilityStatement, or the vendor's write profile offers none: Epic's,
    whatever the statement says); the POST was stored, its answer lost and the search failed: ``unknown``. The
    person, missing it in the chart, confirms it absent: the search made just before the POST (by identifier; on a
    server that says it ignored that, by patient, type and date) finds it: ``written`` with its id, never POSTed
    again, the marks gone. Before, the confirmed retry POSTed it blind: two copies in the chart."""
    ehr = start_sandbox(**server)
    if epic:
        conn, note = _epic_note(world, ehr, http)
    else:
        conn = writable_connection(world, ehr, http)
        note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    ehr.admin.set_fault("500", path=DOC_POSTS, method="GET", times=None)  # and the search fails
    left = write_note(world.env, FAST, note.id)
    assert (left.state, left.reason_code) == ("unknown", "response_lost")
    ehr.admin.clear_faults()
    [stored] = _copies(world, conn, ehr, note)
    answer = api.retry(note.id, {"confirmNotInEhr": True})
    assert answer.status_code == 200, answer.text
    retried = read_note(world, note.id)
    assert retried.confirmed_not_in_ehr and not retried.maybe_stored and not retried.send_unconditional
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == [] and _copies(world, conn, ehr, note) == [stored]
    assert (done.state, done.ehr_resource_id, done.confirmed_not_in_ehr) == ("written", stored, False)


def test_dwb63_a_confirmed_retry_without_conditional_create_of_a_note_not_there_is_searched_then_posted_once(
    world, start_sandbox, http, request_log, api
) -> None:
    """The POST was lost before the EHR stored it: ``unknown``. The person confirms it absent, rightly: the search
    before the POST finds nothing, and the note is POSTed once (without If-None-Exist, none offered): one copy."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop", path=DOC_POSTS, method="POST", times=1)
    assert write_note(world.env, FAST, note.id).state == "unknown"
    assert _copies(world, conn, ehr, note) == []
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    sent = [m for u, m in zip(request_log.urls, request_log.methods, strict=True) if u.path == DOC_POSTS]
    assert sent == ["GET", "POST"] and request_log.posts_conditional(DOC_POSTS) == [False]  # searched, then POSTed
    assert (done.state, done.confirmed_not_in_ehr) == ("written", False)
    assert _copies(world, conn, ehr, note) == [done.ehr_resource_id]


def test_dwb63_a_202_left_for_a_person_says_the_ehr_may_still_be_filing_it_and_a_confirmed_retry_finds_it(
    world, start_sandbox, http, request_log, api
) -> None:
    """A bare 202 on an EHR without conditional create that ignores the identifier search: no check can look by
    identifier and the EHR has not filed the note yet, so once its bounded checks are spent (``recheck``) it is
    ``identifier_search_ignored``, for a person. Its reason and the retry's refusal say the EHR accepted it for later
    (202) and may still be filing it (before, they read as if the chart could be checked now). Once the EHR has filed
    it, a confirmed retry's search by patient, type and date finds it before the POST: ``written``, one copy."""
    ehr = start_sandbox(
        conditional_create=False, create_answer="accepted", create_async_delay_s=100.0, **REPORTS_IGNORED
    )
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    left = write_note(world.env, FAST, note.id)
    for _ in range(FAST.max_attempts + 1):  # checked again by itself (``accepted``) until its checks are spent
        left = write_note(world.env, FAST, note.id) if left.reason_code == "accepted" else left
    assert (left.state, left.reason_code, left.last_http_status) == ("unknown", "identifier_search_ignored", 202)
    assert "(HTTP 202) and may still be filing it" in str(left.reason), left.reason
    refused = api.retry(note.id)
    assert refused.status_code == 409 and refused.json()["error"] == "confirm_not_in_ehr_required", refused.text
    assert "may still be filing it" in refused.json()["message"]
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile; the person missed it in the chart
    [stored] = _copies(world, conn, ehr, note)
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id) == ("written", stored)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1 and _copies(world, conn, ehr, note) == [stored]


def _status(world: SyncWorld, connection_id: str, status: str) -> None:
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        row.status = status
        session.commit()


def test_dwb63_a_confirmed_note_failed_unsent_is_still_searched_for_after_a_plain_retry(
    world, start_sandbox, http, request_log, api
) -> None:
    """The note's POST was stored, its answer lost (``unknown``); the person, missing it in the chart, confirms it
    absent; its run finds the connection needing re-authorization and, the note resting on the person's word as
    never sent, fails it (``connection_needs_reauth``) unsent. Re-authorized, the person retries it plainly (a
    ``failed`` note needs no confirmation): its POST still rests on that word alone, so it is searched for first and
    found, ``written``, never POSTed again. Before, the failure cleared the mark and the plain retry POSTed a copy."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    ehr.admin.set_fault("500", path=DOC_POSTS, method="GET", times=None)  # and the search fails
    assert write_note(world.env, FAST, note.id).state == "unknown"
    ehr.admin.clear_faults()
    [stored] = _copies(world, conn, ehr, note)
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    _status(world, conn, "needs_reauth")
    failed = write_note(world.env, FAST, note.id)
    assert (failed.state, failed.reason_code) == ("failed", "connection_needs_reauth")
    _status(world, conn, "active")
    assert api.retry(note.id).status_code == 200
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == [] and _copies(world, conn, ehr, note) == [stored]
    assert (done.state, done.ehr_resource_id) == ("written", stored)


def test_dwb31_63_a_confirmed_retry_failed_unsent_keeps_the_evidence_for_its_next_confirmed_retry(
    world, start_sandbox, http, request_log, api
) -> None:
    """An EHR whose If-None-Exist ignores the identifier (Spark): the condition matched the patient's other note,
    ``match_unconfirmed``. The person's confirmed retry would POST it without If-None-Exist, but its run finds the
    connection needing re-authorization and fails it unsent. Re-authorized, the person confirms once more: the POST
    goes without If-None-Exist, written once. Before, that retry weighed only the reason it met
    (``connection_needs_reauth``) and stopped at the earlier retry's audit event: the note went with If-None-Exist,
    the condition matched the other note again (``match_unconfirmed``), and only a third retry wrote it."""
    ehr = start_sandbox(patients=4, seed=7, ignored_search_params=["identifier"], if_none_exist_ignores_params=True)
    for patient in ehr.admin.patients():
        conn = writable_connection(world, ehr, http, patient_id=patient)
        if len(patient_notes(world, conn, ehr)) == 1:
            break
    note = enqueue(world, conn)
    assert write_note(world.env, FAST, note.id).reason_code == "match_unconfirmed"
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    _status(world, conn, "needs_reauth")
    failed = write_note(world.env, FAST, note.id)
    assert (failed.state, failed.reason_code) == ("failed", "connection_needs_reauth")
    _status(world, conn, "active")
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    assert read_note(world, note.id).send_unconditional
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written" and request_log.posts_conditional(DOC_POSTS) == [True, False]
    assert sum(carries_identifier(doc, note) for doc in patient_notes(world, conn, ehr)) == 1
