"""A create answered 202 whose status endpoint does not answer as FHIR's async pattern says (R4 async.html), against
the sandbox EHR over a real socket: a poll asked to wait past the polling bound, a status endpoint that does not know
the job (404) or answers a body naming no outcome, and a Binary (DWB-18) accepted for later."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from engine.writeback import write_note
from store.outbox import get_note
from tests.engine.writeback_helpers import (
    FAST,
    binary_pdf_note,
    enqueue,
    note_audit_details,
    server_notes,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"
STATUS = "/fhir/_async/"
#: Polls that do not wait long, within a short bound.
POLLING = replace(FAST, accepted_poll_s=0.2, accepted_wait_s=3.0)
#: ... within a bound a loaded machine cannot reach, for a test whose answer must come from the status endpoint.
ANSWERED = replace(POLLING, accepted_wait_s=30.0)


def test_dwb50_a_status_endpoint_asking_to_wait_past_the_bound_is_not_waited_for(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-50: the status endpoint answers 503 with Retry-After 40 s, longer than the 3 s the polling may take. The
    transport's own retry waited it out (up to 15 min a wait, 5 tries) while the note sat in ``unknown``; now the
    poll stops at the bound and the identifier search settles it (the EHR filed the note at once): written."""
    ehr = start_sandbox(create_answer="async")
    ehr.admin.set_fault("503", path=STATUS, retry_after="40", times=1)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    started = time.monotonic()
    done = write_note(world.env, POLLING, note.id)
    assert time.monotonic() - started < 30  # 40 s and more before
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb34_a_status_endpoint_that_does_not_know_the_job_is_no_refusal(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-34: a 404 from the status endpoint says nothing of the create (the job is unknown where the poll landed, or
    its URL expired); read as the create's refusal, the note was ``failed`` while the EHR was still filing it, and a
    person would send it again. Now it is ``unknown`` (``accepted``), and a later identifier search finds it."""
    _unknown_then_found_by_the_search(world, start_sandbox, http, request_log, "lost")


def test_dwb34_a_status_answer_naming_no_outcome_is_no_refusal(world, start_sandbox, http, request_log) -> None:
    """DWB-34: the status endpoint answers 200 with an informational OperationOutcome while the job runs (no
    batch-response, no note): the create's outcome is not known, so the note is ``unknown`` (``accepted``), never
    ``failed`` with HTTP 200; a later identifier search finds it."""
    _unknown_then_found_by_the_search(world, start_sandbox, http, request_log, "outcome")


@pytest.mark.parametrize("status_mode", ["moved", "gateway"])
def test_dwb34_a_status_answer_that_is_no_fhir_error_status_is_no_refusal(
    world, start_sandbox, http, request_log, status_mode
) -> None:
    """DWB-34: FHIR's async "error status" is a 4xx/5xx with an OperationOutcome. A 307 to the job's status on another
    node (``moved``), or a proxy's 400 HTML page (``gateway``), says nothing of the create: it was taken for the
    create's refusal, and the note ``failed`` (HTTP 307/400) while the EHR was still filing it. Now it is ``unknown``
    (``accepted``), and a later identifier search finds it."""
    _unknown_then_found_by_the_search(world, start_sandbox, http, request_log, status_mode)


def _unknown_then_found_by_the_search(world, start_sandbox, http, request_log, status_mode: str) -> None:
    """A create answered 202 whose status endpoint answers as ``status_mode`` while the EHR files the note 100 s
    later: ``unknown`` (``accepted``) after the polling, then ``written`` by the identifier search, POSTed once."""
    ehr = start_sandbox(create_answer="async", create_async_status=status_mode, create_async_delay_s=100.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    first = write_note(world.env, POLLING, note.id)
    assert (first.state, first.reason_code) == ("unknown", "accepted"), first.reason
    assert len(request_log.paths(STATUS, "GET")) >= 1  # the status endpoint was asked
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    done = write_note(world.env, POLLING, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def _one_note_referencing_one_binary(world, conn, ehr, note, done, request_log) -> None:
    """``done`` is written: one Binary POSTed, one note POSTed, the one note on the EHR referencing that Binary."""
    assert done.state == "written" and done.binary_id, done.reason
    [doc] = server_notes(world, conn, ehr, note)
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{done.binary_id}"
    assert len(request_log.paths("/fhir/Binary", "POST")) == 1
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb18_50_a_binary_accepted_for_later_is_polled_and_referenced(world, start_sandbox, http, request_log) -> None:
    """DWB-18/50: the Binary created before the note is answered 202 with a status endpoint. It was taken for an
    answer naming no id: the note went back to ``pending`` and each try made another Binary. Now the status endpoint
    is polled: one Binary, referenced by the one note."""
    ehr = start_sandbox(create_answer="async", create_answer_types=["Binary"], create_async_delay_s=0.5)
    conn, note = binary_pdf_note(world, ehr, http)
    done = write_note(world.env, replace(ANSWERED, inline_max_bytes=100), note.id)
    _one_note_referencing_one_binary(world, conn, ehr, note, done, request_log)
    stored = get_note(world.env.db, note.id)
    assert stored is not None and stored.state == "written"


def test_dwb51_an_error_status_with_the_jobs_outcome_is_the_creates_refusal(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-51: FHIR's async "error status": the status endpoint answers 422 with a business-rule OperationOutcome,
    the request's own failure. The identifier search finds nothing: failed with the server's reason, never resent."""
    ehr = start_sandbox(create_answer="async", create_async_delay_s=100.0)
    ehr.admin.set_fault("422", path=STATUS, times=None)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, ANSWERED, note.id)
    assert (done.state, done.last_http_status) == ("failed", 422)
    assert done.reason == "error business-rule", done.reason  # the job's outcome; its diagnostics never kept
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb18_50_a_binary_still_pending_is_asked_again_never_posted_again(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-18/50: the Binary is answered 202 and its job runs past the polling bound, try after try. Each try POSTed a
    new Binary (up to 8 holding the note's text, unreferenced in the EHR); now its status URL is kept with the note
    and each try asks that job again: one Binary, referenced by the one note once the job has run."""
    ehr = start_sandbox(create_answer="async", create_answer_types=["Binary"], create_async_delay_s=100.0)
    conn, note = binary_pdf_note(world, ehr, http)
    config = replace(POLLING, inline_max_bytes=100, accepted_wait_s=1.0)
    for _ in range(2):
        waiting = write_note(world.env, config, note.id)
        assert (waiting.state, waiting.binary_id) == ("pending", None), waiting.reason
    assert len(request_log.paths("/fhir/Binary", "POST")) == 1
    assert waiting.reason_code == "binary_pending" and waiting.binary_status_url
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    done = write_note(world.env, replace(config, accepted_wait_s=30.0), note.id)
    _one_note_referencing_one_binary(world, conn, ehr, note, done, request_log)


@pytest.mark.parametrize("status_mode", ["unnamed", "collection"])
def test_dwb18_50_a_binary_job_ending_with_no_id_fails_the_note_at_once_never_posted_again(
    world, start_sandbox, http, request_log, status_mode
) -> None:
    """DWB-18/50: the Binary is answered 202 and its job ends 201 naming no id (sandbox ``create_async_status``
    ``unnamed``: no location, no resource; ``collection``: a location naming only ``[base]/Binary``), the Binary
    stored all the same. As for a synchronous 2xx naming none, no note can reference it and nothing can find it: the
    note is ``failed`` ``binary_id_unknown`` at once, keeping the job's 201, its status URL forgotten; one Binary
    POSTed, the note itself never, nothing sent on a later run."""
    ehr = start_sandbox(
        create_answer="async",
        create_answer_types=["Binary"],
        create_async_delay_s=0.5,
        create_async_status=status_mode,
    )
    _conn, note = binary_pdf_note(world, ehr, http)
    config = replace(ANSWERED, inline_max_bytes=100, max_attempts=10)
    done = write_note(world.env, config, note.id)
    for _ in range(config.binary_posts_max + 1):  # were it handed back, each try would POST another Binary
        if done.state != "pending":
            break
        done = write_note(world.env, config, note.id)
    assert (done.state, done.reason_code, done.binary_id) == ("failed", "binary_id_unknown", None), done.reason
    assert (done.last_http_status, done.binary_status_url, done.binary_posts) == (201, None, 1)
    assert done.reason is not None and "named no id" in done.reason and "HTTP 201" in done.reason
    assert not done.maybe_stored and done.attempts == 1
    assert write_note(world.env, config, note.id).state == "failed"  # a later run sends nothing
    assert len(request_log.paths("/fhir/Binary", "POST")) == 1 and request_log.paths(DOC_POSTS, "POST") == []
    assert len(request_log.paths(STATUS, "GET")) >= 1 and len(ehr.state.store.orphan_resources(["Binary"])) == 1
    events = [d for d in note_audit_details(world) if d.get("note_id") == note.id]
    assert {"binary_job": "no_id"}.items() <= events[-2].items()  # the job's URL forgotten, saying why
    last = events[-1]
    assert (last["to"], last["error_code"], last["status_code"]) == ("failed", "binary_id_unknown", 201)


def test_dwb18_50_binaries_whose_status_url_is_gone_are_bounded(world, start_sandbox, http, request_log) -> None:
    """DWB-18/50: the status endpoint of an accepted Binary answers 404 (the job not known there, its URL expired):
    the URL is forgotten and a new Binary may follow, but at most ``binary_posts_max`` in all; then the note is
    ``failed`` (``binary_not_created``) without the note ever POSTed. Before, every try made one more Binary."""
    ehr = start_sandbox(
        create_answer="async", create_answer_types=["Binary"], create_async_delay_s=100.0, create_async_status="lost"
    )
    _conn, note = binary_pdf_note(world, ehr, http)
    config = replace(POLLING, inline_max_bytes=100, binary_posts_max=2, max_attempts=5)
    done = write_note(world.env, config, note.id)
    while done.state == "pending":
        done = write_note(world.env, config, note.id)
    assert (done.state, done.reason_code) == ("failed", "binary_not_created"), done.reason
    assert len(request_log.paths("/fhir/Binary", "POST")) == 2
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_dwb18_50_a_binary_whose_status_endpoint_is_off_the_base_fails_the_note_at_once(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-18/50, SAL-40: an accepted Binary's status endpoint on another origin is never asked (the token stays on
    the FHIR base), so how the job ends cannot be known: the note fails at once, ``binary_status_off_base``, never
    POSTed. Before, each try counted it a job not settled yet, one attempt after another, until ``retries_exhausted``
    with a reason saying the EHR "has not said yet how it ended"."""
    ehr = start_sandbox(
        create_answer="async",
        create_answer_types=["Binary"],
        create_async_delay_s=100.0,
        create_redirect_origin="https://status.elsewhere.example",
    )
    _conn, note = binary_pdf_note(world, ehr, http)
    done = write_note(world.env, replace(POLLING, inline_max_bytes=100), note.id)
    assert (done.state, done.reason_code) == ("failed", "binary_status_off_base"), done.reason
    assert done.reason and "status.elsewhere.example" in done.reason and "unreferenced" in done.reason
    assert done.binary_status_url is None and done.binary_posts == 1
    assert len(request_log.paths("/fhir/Binary", "POST")) == 1
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_dwb18_a_binary_post_throttled_creates_nothing_and_is_not_counted(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-18, draft-note §5: a Binary POST answered 429 created nothing, so it does not count towards
    ``binary_posts_max``. Counted, two throttled tries failed the note ``binary_not_created`` (its reason claiming
    Binaries may be left in the EHR) where a throttled note waits for its next try."""
    ehr = start_sandbox()
    conn, note = binary_pdf_note(world, ehr, http)
    config = replace(FAST, inline_max_bytes=100, binary_posts_max=2, max_attempts=5)
    ehr.admin.set_fault("429", path="/fhir/Binary", method="POST", times=None, retry_after="0")
    for _ in range(2):
        waiting = write_note(world.env, config, note.id)
        assert (waiting.state, waiting.last_http_status, waiting.binary_posts) == ("pending", 429, 0), waiting.reason
    ehr.admin.clear_faults()
    done = write_note(world.env, config, note.id)
    assert done.state == "written" and done.binary_id, done.reason
    assert done.binary_posts == 1
    assert len(server_notes(world, conn, ehr, note)) == 1


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_dwb50_a_status_endpoint_saying_retry_after_0_is_not_polled_back_to_back(
    world, start_sandbox, http, request_log, retry_after
) -> None:
    """DWB-50: the status endpoint answers 202 with ``Retry-After: 0`` (or a date past) while the job runs. Taken at
    its word, all 10 polls went back to back, the job no further along, and the bound was never used. Now the polls
    are ``accepted_poll_s`` apart at least: within 3 s, 1 s apart, 4 polls at most; the note is ``unknown``
    (``accepted``), for the identifier search."""
    ehr = start_sandbox(create_answer="async", create_async_delay_s=10_000.0, create_async_retry_after=retry_after)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    done = write_note(world.env, replace(FAST, accepted_poll_s=1.0, accepted_wait_s=3.0), note.id)
    assert (done.state, done.reason_code) == ("unknown", "accepted"), done.reason
    assert 1 <= len(request_log.paths(STATUS, "GET")) <= 4
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
