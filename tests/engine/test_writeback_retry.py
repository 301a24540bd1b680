"""DWB-63: a person's retry of a ``failed``, ``blocked`` or ``unknown`` note (``POST /api/ehr/notes/{id}/retry``),
asked through the real auth service app over the world's database and sent by the real engine to the sandbox.

Before, nothing let a person retry: a failed or blocked note stayed so for ever, and an ``unknown`` note a search
could not settle had no action at all. A retry must never put a second copy of the note in the patient's chart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.accepted import ACCEPTED
from engine.writeback.outcomes import SEVERAL_MATCHES
from engine.writeback.preflight import build_payload
from engine.writeback.reconcile import IGNORED
from store import outbox_retry
from store.models import AuditEvent
from store.outbox import NoteRecord, transition
from tests.engine.helpers import SyncWorld
from tests.engine.retry_api import NotesApi, notes_api
from tests.engine.writeback_helpers import (
    FAST,
    NOTE_TEXT,
    enqueue,
    read_note,
    server_notes,
    set_tenant,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"


def _retry_events(world: SyncWorld, note_id: str) -> list[AuditEvent]:
    with world.env.db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.transition")).all()
        return [e for e in events if e.detail.get("note_id") == note_id and e.detail.get("retry")]


def _left(world: SyncWorld, conn: str, state: str, reason_code: str) -> NoteRecord:
    """A note the engine left in ``state`` with ``reason_code`` (set through the store's own transitions)."""
    sending = transition(world.env.db, enqueue(world, conn), "sending", attempts=1)
    return transition(world.env.db, sending, state, reason_code=reason_code, reason="as the run said")


def test_dwb63_engine_reason_codes_are_the_ones_the_retry_reads() -> None:
    assert (outbox_retry.SEARCH_IGNORED, outbox_retry.ACCEPTED) == (IGNORED, ACCEPTED)
    assert outbox_retry.SEVERAL_MATCHES == SEVERAL_MATCHES


def test_dwb63_a_failed_note_retried_is_pending_now_with_full_tries_then_written_once(
    world, sb, http, request_log, api
) -> None:
    """A 422 failed the note; a person's retry puts it back ``pending``, due now, tries reset, reason cleared, the
    version bumped and the actor audited (no note text); the next run writes one note. A second click is 409."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("422", path=DOC_POSTS, times=None)
    failed = write_note(world.env, FAST, note.id)
    assert (failed.state, failed.reason_code, failed.attempts) == ("failed", "fhir_unprocessable", 1)
    sb.admin.clear_faults()
    answer = api.retry(note.id, {"requestedBy": "Practitioner/pract-7"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["state"], body["attempts"], body["reasonCode"], body["reason"]) == ("pending", 0, None, None)
    assert body["version"] == failed.version + 1 and body["lastHttpStatus"] is None and NOTE_TEXT not in answer.text
    retried = read_note(world, note.id)
    assert retried.next_attempt_at <= retried.updated_at and not retried.maybe_stored
    [event] = _retry_events(world, note.id)
    assert event.actor == f"api_key:{world.tenant_id}" and event.outcome == "pending"
    assert event.detail["requested_by"] == "Practitioner/pract-7" and event.detail["from"] == "failed"
    assert event.detail["reason_before"] == "fhir_unprocessable"
    assert NOTE_TEXT not in repr(event.detail) and note.patient_id not in repr(event.detail)
    again = api.retry(note.id)  # the double click
    assert again.status_code == 409 and again.json()["error"] == "note_not_retryable", again.text
    assert again.json()["state"] == "pending" and read_note(world, note.id).version == retried.version
    done = write_note(world.env, FAST, note.id, retried.version)
    assert (done.state, done.attempts) == ("written", 1)
    assert [d["id"] for d in server_notes(world, conn, sb, note)] == [done.ehr_resource_id]
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2  # the refused one and the retry's
    written = api.retry(note.id)
    assert written.status_code == 409 and written.json()["state"] == "written"


def test_dwb63_an_unknown_note_retried_is_searched_first_and_never_duplicated(
    world, start_sandbox, http, request_log, api
) -> None:
    """No conditional create; the POST was stored but its answer lost and the search failed: ``unknown``. The retry
    searches first (the note keeps ``maybe_stored``) and finds it: ``written``, never POSTed again."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    ehr.admin.set_fault("500", path=DOC_POSTS, method="GET", times=None)  # and the search fails
    left = write_note(world.env, FAST, note.id)
    assert (left.state, left.reason_code) == ("unknown", "response_lost")
    ehr.admin.clear_faults()
    answer = api.retry(note.id)
    assert answer.status_code == 200 and answer.json()["state"] == "pending", answer.text
    assert read_note(world, note.id).maybe_stored
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb63_an_unknown_note_not_found_is_sent_again_only_when_the_person_confirms(
    world, start_sandbox, http, request_log, api
) -> None:
    """No conditional create, the POST lost before the EHR stored it: ``unknown``. A plain retry only searches
    (nothing found: ``unknown`` again, not sent); ``confirmNotInEhr`` (the person looked) sends it: one note."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop", path=DOC_POSTS, method="POST", times=1)
    assert write_note(world.env, FAST, note.id).state == "unknown"
    assert api.retry(note.id).status_code == 200
    assert write_note(world.env, FAST, note.id).state == "unknown"
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1 and server_notes(world, conn, ehr, note) == []
    confirmed = api.retry(note.id, {"confirmNotInEhr": True})
    assert confirmed.status_code == 200, confirmed.text
    assert not read_note(world, note.id).maybe_stored
    done = write_note(world.env, FAST, note.id)
    assert [d["id"] for d in server_notes(world, conn, ehr, note)] == [done.ehr_resource_id]
    assert len(request_log.paths(DOC_POSTS, "POST")) == 2
    [first, second] = _retry_events(world, note.id)
    assert (first.detail["confirmed_not_in_ehr"], second.detail["confirmed_not_in_ehr"]) == (False, True)


def test_dwb63_a_blocked_note_retried_blocks_again_until_the_tenant_switch_is_on(world, sb, http, api) -> None:
    """No special path: the retried note meets the pre-flight as any pending note."""
    conn = writable_connection(world, sb, http)
    set_tenant(world, enableNoteCreate=False)
    note = enqueue(world, conn)
    blocked = write_note(world.env, FAST, note.id)
    assert (blocked.state, blocked.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (vendor_disabled)")
    assert api.retry(note.id).status_code == 200
    again = write_note(world.env, FAST, note.id)
    assert (again.state, again.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (vendor_disabled)")
    set_tenant(world)
    assert api.retry(note.id).status_code == 200
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written" and len(server_notes(world, conn, sb, note)) == 1


@pytest.mark.parametrize(
    ("state", "reason_code", "body", "error"),
    [
        ("failed", "duplicate_notes", {"confirmNotInEhr": True}, "note_duplicated_in_ehr"),
        ("unknown", IGNORED, None, "confirm_not_in_ehr_required"),
        ("unknown", IGNORED, {"confirmNotInEhr": False}, "confirm_not_in_ehr_required"),
        ("unknown", ACCEPTED, None, "note_not_retryable"),
        ("sending", None, None, "note_not_retryable"),
    ],
)
def test_dwb63_refused_retries_say_why_and_move_nothing(
    world, sb, http, api, state: str, reason_code: str | None, body: dict[str, Any] | None, error: str
) -> None:
    conn = writable_connection(world, sb, http)
    if state == "sending":
        note = transition(world.env.db, enqueue(world, conn), "sending", attempts=1)
    else:
        note = _left(world, conn, state, str(reason_code))
    answer = api.retry(note.id, body)
    assert answer.status_code == 409, answer.text
    said = answer.json()
    assert (said["error"], said["state"], said["reasonCode"]) == (error, state, reason_code)
    assert read_note(world, note.id).version == note.version and _retry_events(world, note.id) == []


def test_dwb63_an_ignored_search_is_retried_once_the_person_confirms(world, sb, http, api) -> None:
    conn = writable_connection(world, sb, http)
    note = _left(world, conn, "unknown", IGNORED)
    answer = api.retry(note.id, {"confirmNotInEhr": True})
    assert answer.status_code == 200 and answer.json()["state"] == "pending", answer.text
    assert not read_note(world, note.id).maybe_stored
    assert write_note(world.env, FAST, note.id).state == "written"
    assert len(server_notes(world, conn, sb, note)) == 1


def test_dwb63_a_412_several_matches_stays_maybe_stored_when_retried(world, sb, http, api) -> None:
    """Notes carrying the identifier may exist: the retried note is sent only with If-None-Exist or searched first."""
    conn = writable_connection(world, sb, http)
    note = _left(world, conn, "failed", SEVERAL_MATCHES)
    assert api.retry(note.id).status_code == 200
    assert read_note(world, note.id).maybe_stored


def test_dwb63_a_retry_racing_a_run_never_moves_the_note_the_run_claimed(slot_world, sb, http, tmp_path) -> None:
    """A run claims the note (``sending``) between the retry's read and its move: the retry's versioned move finds
    it moved, reads it again and is refused naming ``sending``; the run's state stands (SQLite and PostgreSQL)."""
    world = slot_world
    with notes_api(world, tmp_path / "app_state") as api:
        _race(world, sb, http, api)


def _race(world: SyncWorld, sb: Any, http: Any, api: NotesApi) -> None:
    conn = writable_connection(world, sb, http)
    note = _left(world, conn, "unknown", "response_lost")
    claimed: list[NoteRecord] = []
    hooked: list[bool] = []

    def claim_first(conn_: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not hooked and statement.lstrip().upper().startswith("UPDATE NOTE_OUTBOX"):
            hooked.append(True)  # the run's own move below is not hooked again
            claimed.append(transition(world.env.db, read_note(world, note.id), "sending"))  # another connection

    event.listen(world.env.db.engine, "before_cursor_execute", claim_first)
    try:
        answer = api.retry(note.id)
    finally:
        event.remove(world.env.db.engine, "before_cursor_execute", claim_first)
    assert answer.status_code == 409 and answer.json()["state"] == "sending", answer.text
    [run] = claimed
    assert (read_note(world, note.id).state, read_note(world, note.id).version) == ("sending", run.version)
    assert _retry_events(world, note.id) == []


def test_dwb63_a_note_found_while_a_confirmed_retry_moved_it_is_written_never_posted_again(
    slot_world, start_sandbox, http, request_log, tmp_path
) -> None:
    """A run's identifier search finds the note whose answer was lost (no conditional create), and a person's retry
    with ``confirmNotInEhr`` moves it to ``pending`` just before the run records it ``written``. Before, the run's
    proof was dropped (its move was stale) and the next run POSTed the note again: two copies in the chart."""
    with notes_api(slot_world, tmp_path / "app_state") as api:
        _found_while_retried(slot_world, start_sandbox(conditional_create=False), http, request_log, api)


@contextmanager
def _retried_before_recording(world: SyncWorld, api: NotesApi, note_id: str, state: str) -> Iterator[list[int]]:
    """A person's confirmed retry (its HTTP statuses, yielded) made once, just as the run is about to record the note
    ``state`` (its outbox UPDATE): the retry's move wins, the run's is stale."""
    retried: list[int] = []

    def retry_first(conn_: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        moving = statement.lstrip().upper().startswith("UPDATE NOTE_OUTBOX") and state in repr(parameters)
        if moving and not retried:
            retried.append(api.retry(note_id, {"confirmNotInEhr": True}).status_code)

    event.listen(world.env.db.engine, "before_cursor_execute", retry_first)
    try:
        yield retried
    finally:
        event.remove(world.env.db.engine, "before_cursor_execute", retry_first)


def _found_while_retried(world: SyncWorld, ehr: Any, http: Any, request_log: Any, api: NotesApi) -> None:
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    with _retried_before_recording(world, api, note.id, "written") as retried:
        found = write_note(world.env, FAST, note.id)
    assert retried == [200]
    [doc] = server_notes(world, conn, ehr, note)
    assert (found.state, found.ehr_resource_id) == ("written", doc["id"])
    again = write_note(world.env, FAST, note.id)
    assert again.state == "written" and len(server_notes(world, conn, ehr, note)) == 1
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb63_duplicates_found_while_a_confirmed_retry_moved_the_note_stand(
    world, start_sandbox, http, request_log, api
) -> None:
    """As above with two copies of the note in the EHR: the search's ``duplicate_notes`` stands over the retry's
    ``pending``. Before, the next run POSTed a third copy (no conditional create, the person's confirmation)."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    for _ in range(2):
        client.create(build_payload(note, "preliminary"))
    lost = transition(world.env.db, note, "unknown", reason_code="response_lost", reason=None)
    with _retried_before_recording(world, api, note.id, "failed") as retried:
        found = write_note(world.env, FAST, lost.id)
    assert retried == [200]
    assert (found.state, found.reason_code) == ("failed", "duplicate_notes")
    assert write_note(world.env, FAST, note.id).state == "failed"
    assert len(server_notes(world, conn, ehr, note)) == 2 == len(request_log.paths(DOC_POSTS, "POST"))  # the setup's
