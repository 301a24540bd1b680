"""DWB-82: a note ``written`` because a search found it gets its Provenance too, against the sandbox over a socket.

Before, only a note written by the answer to its own POST got one: a note whose answer was lost and the identifier
search found (in the same run or a later one), one found by patient, type and date, a bare 202 settled by a later
check, and a person's confirmed retry found in the chart before its POST were all ``written`` without one, on a
server offering Provenance create with scopes covering it. Each now gets one, once; the run reads the
CapabilityStatement at most once, not at all where the scopes cover no Provenance create; a failed Provenance
leaves the note ``written``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
from sqlalchemy import select

from connectors.http import RetryPolicy
from engine.writeback import write_note
from sandbox import SandboxServer
from store.models import AuditEvent, Connection
from store.outbox import NoteRecord
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld
from tests.engine.writeback_helpers import (
    FAST,
    WRITE_SCOPE,
    due_now,
    enqueue,
    provenance_said,
    read_note,
    server_notes,
    set_tenant,
    writable_connection,
)

DOC_POSTS, PROV_POSTS, METADATA = "/fhir/DocumentReference", "/fhir/Provenance", "/fhir/metadata"
PROV_SCOPE = f"{WRITE_SCOPE} patient/Provenance.c"
POLLING = replace(FAST, accepted_poll_s=0.2, accepted_wait_s=120.0)
#: An EHR that drops the identifier on create and ignores its search (said so): found by patient, type and date.
DROPPING = {
    "conditional_create": False,
    "create_drops_fields": ["identifier"],
    "ignored_search_params": ["identifier"],
    "report_ignored_params": "self_link",
}


LAST_TRY = replace(FAST, max_attempts=1)


def stored_unanswered_then_statement_unreadable(
    world: SyncWorld, ehr: SandboxServer, http: httpx.Client
) -> tuple[str, NoteRecord]:
    """A note whose last try's POST was stored with its answer lost and whose retry's grant was refused, its
    connection re-authorized since, on an EHR whose CapabilityStatement now answers 503: the next run searches and
    finds it without knowing whether Provenance create is offered. (connection id, note)."""
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    note = enqueue(world, conn, author_id="pract-1")
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    ehr.admin.set_fault("expired_token", path=DOC_POSTS, method="POST", times=None)  # its retry: 401, then
    ehr.admin.set_fault("oauth_error", path="/oauth/token", times=None, error="invalid_grant")  # no refresh
    assert write_note(world.env, LAST_TRY, note.id).maybe_stored
    ehr.admin.clear_faults()
    with world.env.db.session() as session:  # re-authorized
        session.get(Connection, conn).status = "active"
        session.commit()
    ehr.admin.set_fault("503", path=METADATA, times=None)
    return conn, note


def _assert_provenance_of(ehr: SandboxServer, done: NoteRecord, doc_id: str, request_log: RequestLog) -> None:
    """``done`` is written as ``doc_id`` with exactly one Provenance POSTed, stored and pointing at it."""
    assert (done.state, done.ehr_resource_id) == ("written", doc_id) and done.provenance_id
    prov: dict[str, Any] = ehr.state.store.read("Provenance", done.provenance_id)
    assert prov["target"][0]["reference"].startswith(f"DocumentReference/{doc_id}")
    assert prov["agent"][-1]["who"] == {"reference": "Practitioner/pract-1"}
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1


def _connected(
    world: SyncWorld, start_sandbox: Any, http: Any, **settings: Any
) -> tuple[SandboxServer, str, NoteRecord]:
    """A sandbox offering Provenance create (with ``settings``), a connection whose scopes cover it, a note."""
    ehr = start_sandbox(provenance_create=True, **settings)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    return ehr, conn, enqueue(world, conn, author_id="pract-1")


def _lost_then_failed_search(world: SyncWorld, ehr: SandboxServer, note: NoteRecord) -> NoteRecord:
    """The note's POST stored with its answer lost and its identifier search failing: left ``unknown``."""
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)
    ehr.admin.set_fault("500", path=DOC_POSTS, method="GET", times=None)
    left = write_note(world.env, FAST, note.id)
    assert (left.state, left.reason_code) == ("unknown", "response_lost")
    ehr.admin.clear_faults()
    return left


def test_dwb82_32_a_lost_answer_found_by_the_identifier_search_gets_a_provenance(
    world, start_sandbox, http, request_log
) -> None:
    ehr, conn, note = _connected(world, start_sandbox, http, conditional_create=False)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    _assert_provenance_of(ehr, done, doc["id"], request_log)
    assert len(request_log.paths(METADATA)) == 1  # the statement the run's gates read, not read again
    assert write_note(world.env, FAST, note.id).provenance_id == done.provenance_id  # never sent twice
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1
    assert provenance_said(world, note.id) == ["owed", "sent"]  # the found note's commit, then the clear


def test_dwb82_32_33_a_lost_note_found_by_patient_type_and_date_gets_a_provenance(
    world, start_sandbox, http, request_log
) -> None:
    ehr, _conn, note = _connected(world, start_sandbox, http, **DROPPING)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("written", None)
    assert done.ehr_resource_id is not None
    _assert_provenance_of(ehr, done, done.ehr_resource_id, request_log)


def test_dwb82_32_an_unknown_note_found_by_a_later_run_gets_a_provenance_with_one_statement_read(
    world, start_sandbox, http, request_log
) -> None:
    """A later run reconciling an ``unknown`` note has no plan of its own: it reads the CapabilityStatement once."""
    ehr, conn, note = _connected(world, start_sandbox, http, conditional_create=False)
    _lost_then_failed_search(world, ehr, note)
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    _assert_provenance_of(ehr, done, doc["id"], request_log)
    assert len(request_log.paths(METADATA)) == 1


def test_dwb82_a_found_note_whose_scopes_cover_no_provenance_reads_no_statement(
    world, start_sandbox, http, request_log
) -> None:
    ehr = start_sandbox(conditional_create=False, provenance_create=True)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn, author_id="pract-1")
    _lost_then_failed_search(world, ehr, note)
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.provenance_id) == ("written", None)
    assert request_log.paths(METADATA) == [] and request_log.paths(PROV_POSTS, "POST") == []


def test_dwb82_43_a_found_note_of_a_tenant_that_switched_write_off_gets_none(
    world, start_sandbox, http, request_log
) -> None:
    """The search needs no switch (it writes nothing); the Provenance is a write: none once the tenant closed it."""
    ehr, _conn, note = _connected(world, start_sandbox, http, conditional_create=False)
    _lost_then_failed_search(world, ehr, note)
    set_tenant(world, enableWrite=False)
    ehr.admin.set_fault("500", path=METADATA, times=None)  # a statement read would fail: none is needed
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.provenance_id) == ("written", None)
    assert request_log.paths(PROV_POSTS, "POST") == []
    # the switch decides it: no CapabilityStatement read for a Provenance never sent, no warning of one not created
    assert request_log.paths(METADATA) == []
    with world.env.db.session() as session:
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "note.provenance")).all() == []


def test_dwb82_a_failed_provenance_of_a_found_note_leaves_it_written(world, start_sandbox, http, request_log) -> None:
    ehr, _conn, note = _connected(world, start_sandbox, http, conditional_create=False)
    _lost_then_failed_search(world, ehr, note)
    ehr.admin.set_fault("500", path=PROV_POSTS, times=None)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.provenance_id) == ("written", None) and done.ehr_resource_id
    assert request_log.paths(PROV_POSTS, "POST")
    with world.env.db.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.provenance")).all()
        assert event.outcome == "warning" and event.detail["note_id"] == note.id


def test_dwb82_50_a_bare_202_settled_by_a_later_check_gets_a_provenance(
    world, start_sandbox, http, request_log
) -> None:
    ehr, conn, note = _connected(world, start_sandbox, http, create_answer="accepted", create_async_delay_s=100.0)
    first = write_note(world.env, POLLING, note.id)
    assert (first.state, first.reason_code) == ("unknown", "accepted")
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    due_now(world, note.id)
    request_log.clear()
    done = write_note(world.env, POLLING, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    _assert_provenance_of(ehr, done, doc["id"], request_log)
    assert len(request_log.paths(METADATA)) == 1


def test_dwb82_63_a_confirmed_retry_found_in_the_chart_before_its_post_gets_a_provenance(
    world, start_sandbox, http, request_log, api
) -> None:
    ehr, conn, note = _connected(world, start_sandbox, http, conditional_create=False)
    _lost_then_failed_search(world, ehr, note)
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert request_log.paths(DOC_POSTS, "POST") == []  # found first: never POSTed again
    _assert_provenance_of(ehr, done, doc["id"], request_log)
    assert read_note(world, note.id).provenance_id == done.provenance_id


def test_dwb82_31_a_conditional_match_confirmed_by_the_identifier_search_gets_a_provenance(
    world, start_sandbox, http, request_log
) -> None:
    """The repeat's 200 names the note by Location only (unreadable body): the search confirms it (``matched``)."""
    ehr, conn, note = _connected(world, start_sandbox, http, create_html_body=True)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.last_http_status, len(request_log.paths(DOC_POSTS, "POST"))) == (200, 2)
    _assert_provenance_of(ehr, done, doc["id"], request_log)


def test_dwb82_34_a_note_found_after_its_run_could_not_read_the_statement_reads_it_no_second_time(
    world, start_sandbox, http, request_log
) -> None:
    """Its last try's POST stored, the answer lost, the retry's grant refused; re-authorized, the woken run cannot
    read the CapabilityStatement (503), so it searches instead and finds the note (DWB-34). Before, the Provenance
    gate read the statement again: every retry of the transport once more (in production Retry-After waits of up to
    15 min each), for an optional Provenance. Now one read's tries, no Provenance from this run (it stays owed for a
    later run: test_writeback_provenance_owed_edges), the warning audited."""
    ehr = start_sandbox(provenance_create=True)
    conn, note = stored_unanswered_then_statement_unreadable(world, ehr, http)
    request_log.clear()
    done = write_note(world.env, LAST_TRY, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id, done.provenance_id) == ("written", doc["id"], None)
    assert len(request_log.paths(METADATA)) == (world.env.retry or RetryPolicy()).max_attempts  # one read's tries
    assert request_log.paths(PROV_POSTS, "POST") == []
    with world.env.db.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.provenance")).all()
        assert (event.outcome, event.detail["status_code"]) == ("warning", 503)
