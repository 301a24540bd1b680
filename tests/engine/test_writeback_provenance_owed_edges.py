"""DWB-82, an owed Provenance against EHR answers the happy paths do not show, over a socket: another app's
Provenance of the same note found by ``Provenance?target=`` is not ehrsync's (ehrsync's own is still sent), and a
Provenance the EHR took without naming its id (a bare 202) is not sent again by every later run, and a note found
by a run that could not read the CapabilityStatement (503) owes its Provenance, sent by a later run that can; a
Provenance POST still waiting on the EHR (a throttle's Retry-After) never falls due under it; a ``target`` search
the EHR refuses for good does not keep it from being sent; ehrsync's own found under an id that is no FHIR id is taken
without storing that id; a 2xx arriving after another run wrote the note leaves its Provenance to that run."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from connectors.writeback.provenance import build_provenance
from engine.writeback import write_note
from engine.writeback.provenance import provenance_draft
from store.models import utcnow
from store.outbox import NoteRecord, transition
from tests.engine.conftest import RequestLog
from tests.engine.test_writeback_outcomes import _HELD_S, _in_thread, _wait_held, _wait_sending
from tests.engine.test_writeback_provenance_due import (
    PROV_POSTS,
    SEARCH_SCOPE,
    _connected,
    _later_run,
    _stored,
)
from tests.engine.test_writeback_provenance_found import LAST_TRY, stored_unanswered_then_statement_unreadable
from tests.engine.writeback_helpers import FAST, asked_for, provenance_due_now, read_note, server_notes

DOC_POSTS = "/fhir/DocumentReference"

_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def _foreign(doc_id: str) -> dict[str, Any]:
    """Another AI app's Provenance of the same DocumentReference: a contained software Device as its assembler too
    (the shape FHIR suggests for any software author), another model."""
    device = {
        "resourceType": "Device",
        "id": "model",
        "type": {"text": "software"},
        "deviceName": [{"name": "other-scribe", "type": "model-name"}],
        "version": [{"value": "other-scribe 2.1"}],
    }
    return {
        "resourceType": "Provenance",
        "contained": [device],
        "target": [{"reference": f"DocumentReference/{doc_id}"}],
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "assembler"}]},
                "who": {"reference": "#model", "display": "other-scribe 2.1"},
            }
        ],
    }


def test_dwb82_another_apps_provenance_found_by_target_is_not_taken_for_ehrsyncs_own(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """The EHR holds another app's Provenance of the note (its own scribe's, with a software Device too); ehrsync's
    never reached the EHR. The later run's search finds only the other one: ehrsync's is POSTed, its id stored."""
    ehr, _, note = _connected(world, start_sandbox, http, scope=SEARCH_SCOPE, provenance_search=True)
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)
    assert left.ehr_resource_id and left.provenance_due_at is not None and _stored(ehr, left.ehr_resource_id) == []
    other = ehr.state.store.create(_foreign(left.ehr_resource_id))

    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)

    assert len(request_log.paths(PROV_POSTS, "GET")) == 1
    assert done.provenance_id and done.provenance_id != other["id"] and done.provenance_due_at is None
    [mine] = [p for p in _stored(ehr, done.ehr_resource_id) if p["id"] != other["id"]]
    assert mine["id"] == done.provenance_id and mine["contained"][0]["deviceName"][0]["name"] == note.produced_by


def test_dwb82_a_provenance_the_ehr_took_without_naming_its_id_is_not_sent_again(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """A bare 202 for the Provenance (taken, processed later, no id): taken is taken. Before, it was left owed and
    every later run POSTed it again, up to ``max_attempts`` more copies in the chart."""
    _, _, note = _connected(world, start_sandbox, http, create_answer="accepted", create_answer_types=["Provenance"])
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.provenance_id, done.provenance_due_at) == ("written", None, None)
    assert not asked_for(world, note.id)
    assert write_note(world.env, FAST, note.id).provenance_due_at is None
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1


def test_dwb82_a_note_found_by_a_run_that_could_not_read_the_statement_owes_its_provenance(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """Its POST stored, the answer lost, the retry's grant refused; re-authorized, the woken run cannot read the
    CapabilityStatement (503, for now), searches and finds the note. Whether Provenance create is offered is not
    known, so the Provenance stays owed: a later run reads the statement and sends it. Before, the 503 of that one
    moment left the note without a Provenance for good, while a later run's unreadable statement leaves it owed."""
    ehr = start_sandbox(provenance_create=True)
    conn, note = stored_unanswered_then_statement_unreadable(world, ehr, http)
    found = write_note(world.env, LAST_TRY, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (found.state, found.ehr_resource_id, found.provenance_id) == ("written", doc["id"], None)
    assert found.provenance_due_at is not None and request_log.paths(PROV_POSTS, "POST") == []

    ehr.admin.clear_faults()  # the statement is readable again
    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    [prov] = _stored(ehr, doc["id"])
    assert (done.provenance_id, done.provenance_due_at) == (prov["id"], None)


def test_dwb82_a_provenance_post_still_waiting_on_the_ehr_never_falls_due_under_it(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """The writing run's Provenance POST waits on the EHR longer than ``stalled_after_s`` (a 429's Retry-After may
    ask 15 min, several times, more than the default 600 s). While it is alive the run keeps it from falling due,
    so the sensor asks no second run to POST a second one; once it is answered it is no longer owed. Before, it fell
    due ``stalled_after_s`` after ``written`` whatever the POST was doing."""
    grace = replace(FAST, stalled_after_s=2.0)
    ehr, _, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("slow", path=PROV_POSTS, method="POST", times=1, delay_s=60.0)
    ends: list[NoteRecord] = []
    thread = threading.Thread(target=lambda: ends.append(write_note(world.env, grace, note.id)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while ehr.admin.faults():  # the POST is held by the sandbox
            assert time.monotonic() < deadline, "the Provenance POST never reached the sandbox"
            time.sleep(0.05)
        first_due = read_note(world, note.id).provenance_due_at
        assert first_due is not None
        while utcnow() < first_due + timedelta(seconds=1):  # half a ``stalled_after_s`` past its first due time
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held = read_note(world, note.id).provenance_due_at  # the POST still held
        assert held is not None and held > utcnow(), (first_due, held)
        assert not asked_for(world, note.id)
    finally:
        ehr.admin.release_held()
        thread.join(timeout=120)
    [done] = ends
    [prov] = _stored(ehr, done.ehr_resource_id)
    assert (done.provenance_id, done.provenance_due_at) == (prov["id"], None)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1


def test_dwb82_a_target_search_the_ehr_refuses_for_good_does_not_keep_the_provenance_from_being_sent(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """The statement declares ``Provenance?target=``, yet the EHR refuses that search (422: e.g. it wants a patient
    too). The search only spares a second Provenance after a lost answer; refused for good it would be refused on
    every run, so the Provenance is POSTed as on a server without the search. Before, each later run searched, was
    refused and sent nothing, until ``max_attempts`` gave up: no Provenance, ever."""
    ehr, _, note = _connected(world, start_sandbox, http, scope=SEARCH_SCOPE, provenance_search=True)
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    ehr.admin.set_fault("422", path=PROV_POSTS, method="GET", times=None)
    left = write_note(world.env, FAST, note.id)
    assert left.provenance_due_at is not None

    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    [prov] = _stored(ehr, done.ehr_resource_id)
    assert (done.provenance_id, done.provenance_due_at, done.provenance_tries) == (prov["id"], None, 1)
    assert len(request_log.paths(PROV_POSTS, "GET")) == 1


def test_dwb50_82_ehrsyncs_own_provenance_found_under_an_id_that_is_no_fhir_id_is_taken_without_storing_it(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """The later run's ``Provenance?target=`` finds ehrsync's own, which the EHR names by a 70-character id (no FHIR
    id, DWB-50): taken as sent, as a POST answered so is, and that id is not stored (64 characters at most: on
    PostgreSQL the run failed on it, each run until given up; on SQLite it was stored and answered as the note's
    ``ehrProvenanceId``). No second POST."""
    ehr, _, note = _connected(world, start_sandbox, http, scope=SEARCH_SCOPE, provenance_search=True)
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)
    assert left.ehr_resource_id and left.provenance_due_at is not None and _stored(ehr, left.ehr_resource_id) == []
    ehr.admin.settings(created_id_prefix="p" * 60)  # the EHR names its Provenances so (its answer was lost)
    [mine] = [ehr.state.store.create(build_provenance(provenance_draft(left)))]
    assert len(mine["id"]) > 64

    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)

    assert (done.provenance_id, done.provenance_due_at, done.state) == (None, None, "written")
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1 and len(request_log.paths(PROV_POSTS, "GET")) == 1
    assert not asked_for(world, note.id)


def test_dwb82_a_2xx_arriving_after_another_run_wrote_the_note_leaves_its_provenance_to_that_run(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """A run's POST outlives its claim (the run paused past ``stalled_after_s``): another run resumed the note, found
    it and recorded it ``written``, its Provenance owed and that run's POST of it under way. The first run's 201
    then arrives: the note is written already, so its Provenance is the other run's (or, should that run die, a
    later run's once due), never POSTed beside it. Before, the first run POSTed one too: two in the chart."""
    ehr, _, note = _connected(world, start_sandbox, http, conditional_create=False)
    ehr.admin.set_fault("slow", path=DOC_POSTS, method="POST", times=1, delay_s=_HELD_S)
    thread, out = _in_thread(lambda: write_note(world.env, FAST, note.id))
    sending = _wait_sending(world, note.id)
    _wait_held(ehr)
    other = transition(world.env.db, sending, "unknown", reason_code="response_lost", reason=None)
    due = utcnow() + timedelta(seconds=600)  # the other run's ``written`` commit; its Provenance POST under way
    transition(world.env.db, other, "written", ehr_resource_id="found-1", provenance_due_at=due, provenance_tries=0)
    ehr.admin.release_held()
    thread.join(30)
    assert not thread.is_alive() and out["done"].state == "written"
    assert request_log.paths(PROV_POSTS, "POST") == []
    left = read_note(world, note.id)
    assert (left.ehr_resource_id, left.provenance_id) == ("found-1", None) and left.provenance_due_at is not None
