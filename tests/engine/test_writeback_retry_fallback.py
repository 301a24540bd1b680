"""DWB-32/63: a person's retry of a note the patient, type and date search settled, through the real auth service
app, the note written by the real engine to the sandbox over a real socket."""

from __future__ import annotations

from sqlalchemy import update

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.accepted import ACCEPTED, recheck
from engine.writeback.preflight import build_payload
from store.models import Connection, NoteOutbox
from store.outbox import get_note, transition
from tests.engine.test_writeback_fallback import DROPPING
from tests.engine.writeback_helpers import FAST, enqueue, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb32_63_a_retry_refused_for_duplicates_found_by_details_says_how_they_were_found(
    world, start_sandbox, http, api
) -> None:
    """Two notes exactly like this one, found by patient, type and date (they carry no identifier: the vendor drops
    it): the retry is refused ``note_duplicated_in_ehr`` as for any duplicates, its message saying what the search
    found, not that notes carry the draft's identifier (a person looking for that identifier finds none there).
    Before, it said "several notes carry this draft's identifier in the EHR"."""
    ehr = start_sandbox(**DROPPING)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    for _ in range(2):
        client.create(build_payload(note, "preliminary"))
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("failed", "duplicate_notes")
    answer = api.retry(note.id, {"confirmNotInEhr": True})
    assert answer.status_code == 409 and answer.json()["error"] == "note_duplicated_in_ehr", answer.text
    said = answer.json()["message"]
    assert "patient, type, date and content" in said and "identifier" not in said, said


def test_dwb33_63_an_accepted_note_with_a_twin_says_what_was_found_while_searched_and_once_left_for_a_person(
    world, start_sandbox, http, api
) -> None:
    """A note the EHR accepted for later (202) on a vendor declared to drop identifier, found by patient, type and
    date exactly as another unsettled draft of the same second and text is: it stays ``accepted``, searched again by
    itself, and a person's retry is refused so: its reason says so too, and once its checks are spent still says a
    note exactly like it is there. Before, it said "which of them the EHR holds needs a person" while the retry
    answered "ehrsync still searches for it by itself", then "no identifier search found it", which has a person
    confirm it absent and send it again beside its own copy."""
    ehr = start_sandbox(conditional_create=False, create_drops_fields=["identifier"], report_ignored_params="self_link")
    conn = writable_connection(world, ehr, http)
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == conn).values(provider_id="cerner"))
        session.commit()
    first, second = enqueue(world, conn), enqueue(world, conn)
    with world.env.db.session() as session:  # two drafts of one visit, filed in the same second with the same text
        session.execute(update(NoteOutbox).where(NoteOutbox.id == second.id).values(created_at=first.created_at))
        session.commit()
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    client.create(build_payload(first, "preliminary"))  # one of them reached the EHR: which cannot be told
    note = get_note(world.env.db, second.id)
    assert note is not None
    note = transition(
        world.env.db, transition(world.env.db, note, "sending", attempts=1), "unknown", reason_code=ACCEPTED
    )
    done = recheck(world.env.db, client, note, FAST)
    assert (done.state, done.reason_code) == ("unknown", ACCEPTED)
    assert done.reason is not None and "another draft of the same patient" in done.reason
    refused = api.retry(note.id, {"confirmNotInEhr": True})
    assert refused.status_code == 409 and "searches for it by itself" in refused.json()["message"], refused.text
    assert "needs a person" not in done.reason and "searched again" in done.reason, done.reason
    while done.reason_code == ACCEPTED:  # its checks spent: for a person, still saying a copy like it is there
        done = recheck(world.env.db, client, done, FAST)
    assert (done.state, done.reason_code) == ("unknown", "accepted_unconfirmed")
    assert done.reason is not None and "another draft of the same patient" in done.reason, done.reason
    assert "needs a person" in done.reason and "no identifier search found it" not in done.reason
