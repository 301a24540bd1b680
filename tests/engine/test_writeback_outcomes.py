"""Write-back outcomes the first answer does not settle (draft-note §3/§5), against the sandbox EHR: reconciling on
a server that ignores the identifier search, conditional creates whose answers are all lost, 2xx answers naming no
id, and a slow live POST racing a run that takes it for a stalled one."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from connectors.writeback.note import identifier_system
from engine.writeback import write_note
from engine.writeback.lookup import find_by_identifier
from engine.writeback.queue import due_runs
from store.models import AuditEvent, utcnow
from store.outbox import NoteRecord, get_note, transition
from tests.engine.fake_fhir import FakeFhir, bundle, serve
from tests.engine.writeback_helpers import FAST, enqueue, patient_notes, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def _events(world, note_id: str) -> list[AuditEvent]:
    with world.env.db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.transition")).all()
        return [e for e in events if e.detail.get("note_id") == note_id]


def test_dwb32_33_unrelated_notes_found_by_an_ignored_identifier_search_never_resolve_the_draft(
    world, start_sandbox, http
) -> None:
    """DWB-32/33: a server ignoring the identifier parameter (silently) answers with the patient's other notes;
    none carries this draft's identifier, so the lost note stays unknown (never written with another note's id,
    never failed as a duplicate)."""
    ehr = start_sandbox(conditional_create=False, ignored_search_params=["identifier"])
    conn = writable_connection(world, ehr, http)
    assert write_note(world.env, FAST, enqueue(world, conn).id).state == "written"  # another draft's note
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop", path=DOC_POSTS, times=1)  # lost before the EHR stored anything
    done = write_note(world.env, FAST, note.id)
    assert len(patient_notes(world, conn, ehr)) >= 1  # the search answers with unrelated notes
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, "response_lost")


def test_dwb32_33_reconcile_takes_only_the_note_carrying_the_exact_identifier(world, start_sandbox, http) -> None:
    """DWB-32/33: among the patient's notes a lenient server returns, the one with this draft's {system, value}
    is the draft's; the others do not make it a duplicate."""
    ehr = start_sandbox(conditional_create=False, ignored_search_params=["identifier"])
    conn = writable_connection(world, ehr, http)
    assert write_note(world.env, FAST, enqueue(world, conn).id).state == "written"
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)  # stored, answer lost
    done = write_note(world.env, FAST, note.id)
    ehr.admin.settings(ignored_search_params=[])  # so the check below can search
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


@pytest.mark.parametrize("report", ["self_link", "outcome"])
def test_dwb32_33_a_server_saying_it_ignored_the_identifier_cannot_reconcile(
    world, start_sandbox, http, report
) -> None:
    """DWB-32/33: a search the server says it did not apply (self link without ``identifier``, or a warning
    OperationOutcome entry) is no evidence: the note stays unknown (``identifier_search_ignored``) for a person,
    even though the EHR holds it, on a server declaring no patient/type/date search to look by instead (one that
    does: tests/engine/test_writeback_fallback.py); a later run searches again without another transition."""
    ehr = start_sandbox(
        conditional_create=False,
        ignored_search_params=["identifier"],
        report_ignored_params=report,
        document_search_params=[],
    )
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("unknown", None, "identifier_search_ignored")
    again = write_note(world.env, FAST, note.id)
    assert (again.state, again.version) == ("unknown", done.version)
    assert [e.outcome for e in _events(world, note.id)] == ["sending", "sending", "unknown", "unknown"]


@pytest.mark.parametrize(("fault", "retry_after"), [("drop_response", None), ("500", None), ("503", "")])
def test_dwb31_34_conditional_create_out_of_retries_with_an_unknown_outcome_is_unknown_not_failed(
    world, sb, http, request_log, fault, retry_after
) -> None:
    """DWB-31/34, draft-note §5: with If-None-Exist lost answers (and 500, 503 without Retry-After) are retried; once
    the attempts are spent the note is ``unknown`` and reconciled, never ``failed``: the EHR may hold it."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault(fault, path=DOC_POSTS, times=None, retry_after=retry_after)
    states = [write_note(world.env, FAST, note.id).state for _ in range(FAST.max_attempts)]
    assert states == ["pending"] * (FAST.max_attempts - 1) + ["unknown"]
    sb.admin.clear_faults()
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    done = write_note(world.env, FAST, note.id)  # a later run only searches
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts
    docs = server_notes(world, conn, sb, note)
    if fault == "drop_response":  # the EHR stored the first POST (once: If-None-Exist): found, written
        [doc] = docs
        assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    else:
        assert docs == [] and (done.state, done.reason_code) == ("unknown", "response_lost")


def test_dwb50_a_201_naming_no_id_learns_it_by_the_identifier_search(world, start_sandbox, http) -> None:
    """DWB-50/33: an empty 201 without Location still yields the note's id: the exact identifier search finds it."""
    ehr = start_sandbox(create_bare_answer=True)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id, done.ehr_version_id) == ("written", doc["id"], doc["meta"]["versionId"])
    assert (done.reason_code, done.last_http_status) == (None, 201)


def test_dwb50_an_id_that_cannot_be_learned_is_written_as_id_unknown(world, start_sandbox, http, caplog) -> None:
    """DWB-50: a 201 naming no id on a server that ignores the identifier search: ``written`` (the 2xx is proof)
    with reason code ``id_unknown``, logged and audited, never a silent missing id."""
    ehr = start_sandbox(create_bare_answer=True, ignored_search_params=["identifier"], report_ignored_params="outcome")
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown")
    assert done.reason is not None and "HTTP 201" in done.reason
    assert _events(world, note.id)[-1].detail["error_code"] == "id_unknown"
    assert any("id_unknown" in r.getMessage() for r in caplog.records)


#: How long the sandbox may hold a POST the test releases once it has acted: the sandbox's longest delay
_HELD_S = 60.0


def _in_thread(call: Any) -> tuple[threading.Thread, dict[str, NoteRecord]]:
    out: dict[str, NoteRecord] = {}
    thread = threading.Thread(target=lambda: out.setdefault("done", call()))
    thread.start()
    return thread, out


def _wait_sending(world, note_id: str) -> NoteRecord:
    """The note once its POST is recorded (``doc_posted``): the version that POST leaves at, for another run to move."""
    deadline = time.monotonic() + 60  # by the clock, not a count of short sleeps: a busy machine oversleeps them
    while time.monotonic() < deadline:
        current = get_note(world.env.db, note_id)
        if current is not None and current.state == "sending" and current.doc_posted:
            return current
        time.sleep(0.05)
    raise AssertionError("the note never became sending in 60 s")


def _wait_held(ehr) -> None:
    """Until the sandbox holds the POST (its one-shot ``slow`` fault is spent): a note is ``sending`` before its POST
    leaves, so a release (or the other run's search) may otherwise reach the sandbox first on a busy machine."""
    deadline = time.monotonic() + 60
    while ehr.admin.faults():
        assert time.monotonic() < deadline, "the POST never reached the sandbox in 60 s"
        time.sleep(0.05)


def _asked_while(world, thread: threading.Thread, note_id: str, *, stalled_after_s: float) -> list[str]:
    """The sensor's run keys for ``note_id`` while ``thread`` (a live attempt) runs: what it would resume."""
    asked: list[str] = []
    while thread.is_alive():
        runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=stalled_after_s)
        asked += [r.run_key for r in runs if r.note_id == note_id]
        time.sleep(0.2)
    thread.join()
    return asked


def test_a_live_slow_post_is_never_taken_for_a_stalled_one(world, start_sandbox, http) -> None:
    """DWB-60: a POST alive longer than ``stalled_after_s`` (e.g. waiting out Retry-After) keeps its note fresh (the
    claim's lease, renewed by the heartbeat): the sensor's query never asks for it again meanwhile, and the note ends
    written once."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("slow", path=DOC_POSTS, times=1, delay_s=5.0)
    config = replace(FAST, stalled_after_s=2.0)  # beats every 0.5 s: a loaded machine still keeps well within it
    thread, out = _in_thread(lambda: write_note(world.env, config, note.id))
    _wait_sending(world, note.id)
    asked = _asked_while(world, thread, note.id, stalled_after_s=2.0)
    [doc] = server_notes(world, conn, ehr, note)
    assert asked == [] and (out["done"].state, out["done"].ehr_resource_id) == ("written", doc["id"])


def test_a_2xx_after_another_run_moved_the_note_to_unknown_is_still_written(world, start_sandbox, http) -> None:
    """A run that took the live POST for a stalled one moved the note to unknown and found nothing yet; the POST's
    201 then arrives: the note is written with that id (a 2xx is proof), never left unknown with the id dropped."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    # the sandbox holds the POST until the other run (a transition and a search) has ended, then lets it go on
    ehr.admin.set_fault("slow", path=DOC_POSTS, method="POST", times=1, delay_s=_HELD_S)
    thread, out = _in_thread(lambda: write_note(world.env, FAST, note.id))
    sending = _wait_sending(world, note.id)
    _wait_held(ehr)
    other = transition(world.env.db, sending, "unknown", reason_code="response_lost", reason=None)
    assert write_note(world.env, FAST, other.id).state == "unknown"  # the other run's search: not stored yet
    assert thread.is_alive()  # the POST is still held: the 201 comes after the other run
    ehr.admin.release_held()
    thread.join(30)
    [doc] = server_notes(world, conn, ehr, note)
    final = get_note(world.env.db, note.id)
    assert final is not None and (final.state, final.ehr_resource_id) == ("written", doc["id"])
    assert out["done"].state == "written"
    assert [e.outcome for e in _events(world, note.id)] == ["sending", "sending", "unknown", "written"]
    assert _events(world, note.id)[-1].detail["moved_by_other_run"] == "unknown"


#: A draft (only what the identifier search reads) and the DocumentReference carrying its identifier.
_DRAFT = SimpleNamespace(id="n1", tenant_id="t1", patient_id="p1", draft_id="d1")
_OURS = {
    "resourceType": "DocumentReference",
    "id": "doc-1",
    "identifier": [{"system": identifier_system("t1"), "value": "d1"}],
}


def test_dwb33_a_match_repeated_on_a_later_page_is_one_note_not_a_duplicate() -> None:
    """A server paging by offset may send the same note again on a later page: it is one note (by id), so the draft
    is resolved to it rather than failed as ``duplicate_notes``."""
    fake = FakeFhir()
    fake.routes["/fhir/DocumentReference"] = lambda _p, _q: bundle([_OURS], next_url=f"{fake.fhir_base}/page2")
    fake.routes["/fhir/page2"] = lambda _p, _q: bundle([_OURS])
    with serve(fake), httpx.Client() as http:
        client = FhirClient(fake.fhir_base, StaticTokenSource("tok"), http=http)
        found = find_by_identifier(client, _DRAFT, FAST)  # type: ignore[arg-type]
    assert fake.hits("/fhir/page2") == 3  # an incomplete listing is searched again (bounded): it may hide a match
    assert found.found is not None and found.found["id"] == "doc-1"


def test_a_2xx_after_another_run_failed_the_note_is_still_written(world, start_sandbox, http) -> None:
    """Another run ended the note ``failed`` while the POST was alive; the 201 that then arrives proves the EHR holds
    it: the note is written with its id (a host told 'failed' would file it again), never left failed with the id
    dropped (found in review)."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    # the sandbox holds the POST until the other run's transition has landed, then lets it go on (a fixed 3 s stall
    # let the 201 land first on a busy machine, and the transition met a written note)
    ehr.admin.set_fault("slow", path=DOC_POSTS, method="POST", times=1, delay_s=_HELD_S)
    thread, out = _in_thread(lambda: write_note(world.env, FAST, note.id))
    sending = _wait_sending(world, note.id)
    _wait_held(ehr)
    transition(world.env.db, sending, "failed", reason_code="retries_exhausted", reason=None)
    assert thread.is_alive()  # the POST is still held: the 201 comes after the transition
    ehr.admin.release_held()
    thread.join(30)
    [doc] = server_notes(world, conn, ehr, note)
    final = get_note(world.env.db, note.id)
    assert final is not None and (final.state, final.ehr_resource_id) == ("written", doc["id"])
    assert out["done"].state == "written"
    assert _events(world, note.id)[-1].detail["moved_by_other_run"] == "failed"


def test_a_resumed_sending_note_is_kept_fresh_while_its_capability_statement_is_read(
    world, start_sandbox, http
) -> None:
    """A run resuming a note in ``sending`` first reads the CapabilityStatement, which may wait too: the note is kept
    fresh from the start, so the sensor never asks for it again meanwhile (found in review: the heartbeat began only
    at the POST)."""
    ehr = start_sandbox()
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    resumed = transition(world.env.db, note, "sending", attempts=1, detail={"attempt": 1})
    ehr.admin.set_fault("slow", path="/fhir/metadata", times=1, delay_s=5.0)
    config = replace(FAST, stalled_after_s=2.0)
    thread, out = _in_thread(lambda: write_note(world.env, config, resumed.id))
    asked = _asked_while(world, thread, note.id, stalled_after_s=2.0)
    assert asked == [] and out["done"].state == "written"


def test_dwb33_a_routine_warning_about_something_else_does_not_void_the_identifier_search() -> None:
    """Only a warning about the search (``not-supported``, or naming ``identifier``) makes the answer no evidence; a
    server that routinely warns about something else (a result window, paging) still has its exact match taken
    (found in review: any warning left every note ``unknown`` for a person)."""

    def answer(warning: dict[str, Any]) -> Any:
        def route(_p: str, _q: dict[str, list[str]]) -> Any:
            status, headers, body = bundle([_OURS])
            page = orjson.loads(body)
            outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", **warning}]}
            page["entry"].append({"resource": outcome, "search": {"mode": "outcome"}})
            return status, headers, orjson.dumps(page)

        return route

    fake = FakeFhir()
    found = {}
    with serve(fake), httpx.Client() as http:
        client = FhirClient(fake.fhir_base, StaticTokenSource("tok"), http=http)
        for name, warning in {
            "routine": {"code": "informational", "diagnostics": "results limited to the last 10 years"},
            "not-supported": {"code": "not-supported", "diagnostics": "parameter ignored"},
            "names-it": {"code": "processing", "diagnostics": "Unknown search parameter: identifier"},
        }.items():
            fake.routes["/fhir/DocumentReference"] = answer(warning)
            found[name] = find_by_identifier(client, _DRAFT, FAST)  # type: ignore[arg-type]
    assert found["routine"].found is not None and not found["routine"].ignored
    assert found["not-supported"].ignored and found["names-it"].ignored
