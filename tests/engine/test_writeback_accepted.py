"""Create answers beyond 201/200, against the sandbox EHR over a real socket (FHIR R4 http.html create/async;
RFC 9110 §15.4): 202 Accepted (with a status endpoint to poll, or bare: the identifier search settles it later), and
redirects (303/302 point at the result, read only under the FHIR base; 307/308 re-POST only under the FHIR base)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from engine.writeback import write_note
from engine.writeback.lookup import carries_identifier
from engine.writeback.queue import due_runs
from store.models import utcnow
from store.outbox import NoteRecord, get_note
from tests.engine.writeback_helpers import FAST, enqueue, patient_notes, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
#: Polls that do not wait long: the sandbox's status endpoint says Retry-After 1.
POLLING = replace(FAST, accepted_poll_s=0.2, accepted_wait_s=120.0)
ELSEWHERE = "http://127.0.0.1:9"  # nothing listens there; no request may go there
#: A server that ignores the identifier search and says so (its self link leaves the parameter out).
REPORTS_IGNORED = {"ignored_search_params": ["identifier"], "report_ignored_params": "self_link"}


def test_dwb50_a_202_with_a_status_endpoint_is_polled_until_written(world, start_sandbox, http, request_log) -> None:
    """DWB-50/31: the FHIR async pattern. The note is stored a moment after the 202; the status endpoint answers 202,
    then a batch-response naming the created note: written with that id, one POST, one note."""
    ehr = start_sandbox(create_answer="async", create_async_delay_s=1.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, POLLING, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id, done.ehr_version_id) == ("written", doc["id"], "1")
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
    assert len(request_log.paths("/fhir/_async/")) >= 1 and all(request_log.with_token("/fhir/_async/"))


def test_dwb50_51_a_202_whose_job_is_refused_fails_with_the_outcome(world, start_sandbox, http, request_log) -> None:
    """DWB-50/51: the status endpoint says the accepted create ended 422: failed with the server's outcome (the
    identifier search found nothing first), never unknown and never sent again."""
    ehr = start_sandbox(create_answer="async", create_async_rejects=True)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, POLLING, note.id)
    assert (done.state, done.last_http_status) == ("failed", 422)
    assert done.reason == "error business-rule" and server_notes(world, conn, ehr, note) == [], done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb32_a_bare_202_is_unknown_then_settled_by_a_later_identifier_search(world, start_sandbox, http) -> None:
    """DWB-32/50: a 202 naming nothing to poll, the note stored later: unknown (``accepted``), due again for the
    identifier search; the sensor's query asks for it, and that run finds it: written."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=100.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    first = write_note(world.env, POLLING, note.id)
    assert (first.state, first.reason_code, first.last_http_status) == ("unknown", "accepted", 202)
    assert server_notes(world, conn, ehr, note) == []
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=600.0)
    [run] = [r for r in runs if r.note_id == note.id]
    done = write_note(world.env, POLLING, note.id, run.version)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


def test_dwb32_a_bare_202_never_found_is_left_for_a_person_after_bounded_checks(world, start_sandbox, http) -> None:
    """A 202 whose note never appears: each check is an attempt; after ``max_attempts`` it stays unknown
    (``accepted_unconfirmed``) and the sensor asks for it no more."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=10_000.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    for _ in range(FAST.max_attempts + 1):
        write_note(world.env, POLLING, note.id)
    last = get_note(world.env.db, note.id)
    assert last is not None and (last.state, last.reason_code) == ("unknown", "accepted_unconfirmed")
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=600.0)
    assert note.id not in {r.note_id for r in runs}


def _ours(world: Any, conn: str, ehr: Any, note: NoteRecord) -> list[dict[str, Any]]:
    """This draft's notes among the patient's (filtered here: this EHR ignores the identifier search)."""
    return [doc for doc in patient_notes(world, conn, ehr) if carries_identifier(doc, note)]


def test_dwb32_50_a_bare_202_where_the_identifier_search_is_ignored_is_checked_again_and_found_by_details(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32/50: as above on an EHR that ignores the identifier search (and says so) but offers the patient, type and
    date search. Before, the first check (the EHR not done filing) made the note ``identifier_search_ignored`` at once,
    for a person, never searched again, where another 202 note gets ``max_attempts`` checks. Now it stays
    ``accepted`` and the sensor asks for it again: once filed, the fallback search finds it, ``written``, one POST."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=100.0, **REPORTS_IGNORED)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    first = write_note(world.env, POLLING, note.id)
    assert (first.state, first.reason_code, first.last_http_status) == ("unknown", "accepted", 202), first.reason
    assert "searches for it again by itself" in str(first.reason) and _ours(world, conn, ehr, note) == []
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=600.0)
    [run] = [r for r in runs if r.note_id == note.id]
    done = write_note(world.env, POLLING, note.id, run.version)
    [doc] = _ours(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb32_50_a_bare_202_never_found_where_the_identifier_search_is_ignored_gets_the_same_bounded_checks(
    world, start_sandbox, http
) -> None:
    """The note never appears: it is checked as often as any 202 note (``accepted`` until ``max_attempts``), then
    ``identifier_search_ignored`` for a person, its reason saying the EHR may still be filing it; asked for no more."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=10_000.0, **REPORTS_IGNORED)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    codes = [write_note(world.env, POLLING, note.id).reason_code for _ in range(FAST.max_attempts + 1)]
    assert codes == ["accepted"] * FAST.max_attempts + ["identifier_search_ignored"], codes
    last = get_note(world.env.db, note.id)
    assert last is not None and last.state == "unknown" and "may still be filing it" in str(last.reason), last.reason
    assert "needs a person" in str(last.reason)
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=600.0)
    assert note.id not in {r.note_id for r in runs}


def test_dwb31_a_303_to_the_result_is_read_and_written_not_refused(world, start_sandbox, http, request_log) -> None:
    """DWB-31: 303 See Other after the POST (also how some servers answer a conditional create that matched): a GET
    of Location under the FHIR base shows the note carrying the draft's identifier: written with its id."""
    ehr = start_sandbox(create_answer="see_other")
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id, done.last_http_status) == ("written", doc["id"], 303)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb31_a_302_to_another_host_is_never_followed_and_the_search_settles_it(
    world, start_sandbox, http, request_log
) -> None:
    """SAL-40/DWB-32: a 302 (as 303 after a POST: processed) whose Location is on another host: nothing is sent
    there (the token stays with the FHIR server); the POST may be stored, so the identifier search decides: written."""
    ehr = start_sandbox(create_answer="found", create_redirect_origin=ELSEWHERE)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert not [u for u in request_log.urls if u.port == 9]
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_a_307_under_the_fhir_base_is_posted_again_there_once(world, start_sandbox, http, request_log) -> None:
    """A 307 says the POST was not processed: sent again (same body, If-None-Exist) to Location under the base."""
    ehr = start_sandbox(create_answer="temporary_redirect")
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert [u.params.get("_moved") for u in request_log.paths(DOC_POSTS, "POST")] == [None, "1"]


def test_a_308_to_another_host_is_refused_never_reposted(world, start_sandbox, http, request_log) -> None:
    """A 308 to another origin: the note and token never go there; nothing was processed, so the note is failed
    with the reason ``create_redirect`` (a person checks the EHR's address), not unknown."""
    ehr = start_sandbox(create_answer="permanent_redirect", create_redirect_origin=ELSEWHERE)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code, done.last_http_status) == ("failed", "create_redirect", 308)
    assert server_notes(world, conn, ehr, note) == [] and not [u for u in request_log.urls if u.port == 9]


class _Killed(BaseException):
    """The run's process dying: nothing after it is committed (no ``except Exception`` catches it)."""


def test_dwb34_a_run_killed_while_polling_a_202_never_posts_the_note_again(
    world, start_sandbox, http, request_log, monkeypatch
) -> None:
    """DWB-34: the 202 is committed (``unknown``, ``accepted``) before the status endpoint is polled. A run killed
    while it polls (up to a minute) left the note ``sending``; resumed with If-None-Exist it was POSTed again, which
    cannot see a note the EHR has not filed yet: two notes once the job ran. Now the resumed run only searches."""
    ehr = start_sandbox(create_answer="async", create_async_delay_s=100.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)

    def die(_seconds: float) -> None:
        raise _Killed

    monkeypatch.setattr("engine.writeback.accepted.time.sleep", die)
    with pytest.raises(_Killed):
        write_note(world.env, POLLING, note.id)
    monkeypatch.undo()
    left = get_note(world.env.db, note.id)
    assert left is not None and (left.state, left.reason_code) == ("unknown", "accepted")
    write_note(world.env, POLLING, note.id)  # resumed (as the sensor would once it is due): searches, never POSTs
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    done = write_note(world.env, POLLING, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_a_303_whose_location_cannot_be_requested_is_unknown_never_failed(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32: a 303 says the POST was processed, so a Location that cannot be requested (here a port that is no
    number) must not make the note ``failed`` (a person would send it again: two notes); the identifier search
    decides, and finds it."""
    ehr = start_sandbox(create_answer="see_other", create_redirect_origin="http://127.0.0.1:notaport")
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
