"""A note whose pre-flight cannot read the EHR's CapabilityStatement (an outage, a 5xx, a statement that is not FHIR
JSON), against the sandbox over a real socket and a real SQLite app database.

Nothing was sent, so the note stays ``pending`` and its tries are not counted (a long outage never fails a note);
consecutive such holds wait twice as long each time up to ``backoff_cap_s``, and the note's ``reason`` says why it
waits. Before, every hold waited ``backoff_s(1)`` (30 s) with no reason: a new version, audit event, run and
``/metadata`` request every 30 s (~2,900 a day per note) for as long as the statement stayed unreadable."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.writeback import WritebackConfig, write_note
from store.models import utcnow
from store.outbox import NoteRecord, get_note, transition
from store.outbox_queue import due_notes
from tests.engine.writeback_helpers import due_now, enqueue, held_s, server_notes, time_passes, writable_connection

CONFIG = WritebackConfig(service_write_enabled=True, backoff_base_s=30.0, backoff_cap_s=600.0, max_attempts=3)
METADATA = "/fhir/metadata"
DOC_POSTS = "/fhir/DocumentReference"
#: How the reason of a held note that may be stored ends (before: "the note is sent once it can be", as if unsent)
AGAIN_OR_SEARCHED = "sent again with If-None-Exist (which finds the stored one) or searched for by its identifier"
#: the waits of eight consecutive holds: doubling from the base, then the cap
WAITS = [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0]


def _held_over_due_times(world, request_log, note_id: str, expected_code: str) -> NoteRecord:
    """Eight due times: each run reads ``/metadata`` once and puts the note off twice as long as the last (to the
    cap); a run before it is due again sends nothing and writes no version."""
    waits = []
    note = get_note(world.env.db, note_id)
    assert note is not None
    for _ in WAITS:
        asked = len(request_log.paths(METADATA, "GET"))
        held = write_note(world.env, CONFIG, note.id)
        assert (held.state, held.attempts, held.reason_code) == ("pending", 0, expected_code), held.reason
        assert len(request_log.paths(METADATA, "GET")) > asked  # this due time read the statement
        waits.append(round(held_s(held), 1))
        asked = len(request_log.paths(METADATA, "GET"))
        early = write_note(world.env, CONFIG, note.id)  # not due: nothing asked, nothing written
        assert early.version == held.version and len(request_log.paths(METADATA, "GET")) == asked
        due_now(world, held.id)
        note = held
    assert waits == WAITS
    assert request_log.paths(DOC_POSTS, "POST") == []
    return note


def test_dwb40_a_statement_that_is_not_fhir_json_puts_the_note_off_longer_each_time_and_says_why(
    world, start_sandbox, http, request_log, caplog: pytest.LogCaptureFixture
) -> None:
    """``rest`` sent as a bare object: the note waits, its reason naming the statement and the problem (no
    diagnostics), and each hold is logged as a warning with the error code for the operator."""
    sb = start_sandbox(capability_variants=["bare_objects"])
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    with caplog.at_level("WARNING", logger="engine.writeback"):
        held = _held_over_due_times(world, request_log, note.id, "fhir_error")
    reason = held.reason or ""
    assert reason.startswith("the EHR's CapabilityStatement could not be read (fhir_error: "), reason
    assert "rest is an object, not an array" in reason and reason.endswith("the note is sent once it can be"), reason
    warned = [r for r in caplog.records if r.levelname == "WARNING" and note.id in r.getMessage()]
    assert len(warned) == len(WAITS) and "fhir_error" in warned[0].getMessage()


def test_dwb40_an_ehr_whose_metadata_fails_holds_the_note_untried_and_sends_it_once_it_answers(
    world, start_sandbox, http, request_log
) -> None:
    """A ``/metadata`` answering 500 for a long while: the note is never failed (its tries untouched), and the first
    due time after the EHR answers again sends it, once."""
    sb = start_sandbox()
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("500", path=METADATA, times=None)
    held = _held_over_due_times(world, request_log, note.id, "fhir_server_error")
    assert (held.reason or "").startswith("the EHR's CapabilityStatement could not be read (fhir_server_error: ")
    sb.admin.clear_faults()
    done = write_note(world.env, CONFIG, note.id)
    assert (done.state, done.attempts, done.reason) == ("written", 1, None)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_dwb40_a_throttled_capability_statement_read_waits_at_least_the_retry_after(
    world, start_sandbox, http, request_log
) -> None:
    """A ``/metadata`` answering 429 with a ``Retry-After`` longer than the doubling's next wait: waited (the
    server's word), the note's tries untouched, and the next hold in a row still doubles from there up to the cap."""
    sb = start_sandbox()
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("429", path=METADATA, times=None, retry_after="3600")
    held = write_note(world.env, CONFIG, note.id)
    assert (held.state, held.attempts, held.reason_code) == ("pending", 0, "rate_limited"), held.reason
    assert round(held_s(held)) == 3600
    due_now(world, held.id)
    sb.admin.clear_faults()
    sb.admin.set_fault("500", path=METADATA, times=None)
    again = write_note(world.env, CONFIG, note.id)
    assert (again.state, again.attempts) == ("pending", 0) and round(held_s(again)) == CONFIG.backoff_cap_s


def test_dwb40_a_refused_token_refresh_before_the_statement_is_held_without_the_token_endpoints_words(
    world, start_sandbox, http
) -> None:
    """``/metadata`` answers 401, and the refresh it sets off is refused with an ``error_description`` naming the
    patient (the server's own words): the note is held, its reason naming the OAuth ``error`` only. Before, the
    reason carried the description, shown by ``GET /api/ehr/notes/{id}`` and the run's output metadata (DWB-62)."""
    sb = start_sandbox()
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    said = "results for Jane Q Patient (born 1970-01-01) are incomplete"
    sb.admin.set_fault("expired_token", path=METADATA, times=None)
    sb.admin.set_fault("oauth_error", path="/oauth/token", times=None, error="invalid_request", error_description=said)
    held = write_note(world.env, CONFIG, note.id)
    assert (held.state, held.attempts, held.reason_code) == ("pending", 0, "invalid_request"), held.reason
    reason = held.reason or ""
    assert reason.startswith("the EHR's CapabilityStatement could not be read (invalid_request: "), reason
    assert "Jane" not in reason and "1970" not in reason, reason


def test_dwb40_with_a_zero_backoff_base_a_held_note_still_asks_less_and_less_often(
    world, start_sandbox, http, request_log
) -> None:
    """``backoff_base_s = 0`` (allowed: counted retries that do not wait): over an hour of the sensor's 30 s ticks the
    holds wait 30 s (``HOLD_MIN_S``), then twice as long each time up to the cap: 10 runs. Before, each hold waited
    0 s and doubling 0 stayed 0: a run, a note version, an audit event and a ``/metadata`` read on every tick, for
    ever (120 an hour per note)."""
    config = replace(CONFIG, backoff_base_s=0.0)
    sb = start_sandbox(capability_variants=["bare_objects"])  # unreadable, one GET per read (no transport retry)
    note = enqueue(world, writable_connection(world, sb, http))
    waits = []
    for _ in range(120):  # an hour of the write-back sensor's ticks
        if note.id in {n.id for n in due_notes(world.env.db, utcnow())}:  # the sensor asks for a run
            held = write_note(world.env, config, note.id)
            assert (held.state, held.attempts, held.reason_code) == ("pending", 0, "fhir_error"), held.reason
            waits.append(round(held_s(held)))
        time_passes(world, note.id, 30.0)
    assert waits[:6] == [30, 60, 120, 240, 480, 600] and set(waits[6:]) == {600}, waits
    assert len(waits) <= 11 and len(request_log.paths(METADATA, "GET")) == len(waits)
    last = get_note(world.env.db, note.id)
    assert last is not None and last.version == note.version + len(waits)


@pytest.mark.parametrize("maybe_stored", [False, True])
def test_dwb40_a_resumed_note_never_posted_waits_for_the_statement_as_a_pending_one(
    world, start_sandbox, http, request_log, caplog: pytest.LogCaptureFixture, maybe_stored
) -> None:
    """A note left ``sending`` before its DocumentReference POST was recorded (no ``doc_posted``: its run died), and
    the statement cannot be read: held ``pending`` as a pending note is, its reason saying why (``maybe_stored``:
    that it is sent again only with If-None-Exist, or searched for), a warning logged,
    ``maybe_stored`` kept (an earlier try stored, its answer lost: the next POST carries If-None-Exist and finds it),
    and the try the dead run counted given back: it POSTed nothing, and the next try counts it again. Before, it was
    returned unchanged, no reason, no warning: asked for again every ``stalled_after_s`` without end; then, held, it
    kept that try, so the note read one try more than were made (9 of 8 after a last try that died unsent)."""
    sb = start_sandbox()
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    if maybe_stored:  # the first try stored, its answer lost on every try of the transport
        sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)
        note = write_note(world.env, replace(CONFIG, backoff_base_s=0.0, backoff_cap_s=0.0), note.id)
        assert (note.state, note.maybe_stored, note.attempts) == ("pending", True, 1), note.reason
        sb.admin.clear_faults()
    attempt = note.attempts + 1  # that run went to ``sending`` and died before its POST
    resumed = transition(world.env.db, note, "sending", attempts=attempt, doc_posted=False)
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    sb.admin.set_fault("500", path=METADATA, times=None)
    with caplog.at_level("WARNING", logger="engine.writeback"):
        held = write_note(world.env, CONFIG, resumed.id)
    assert (held.state, held.attempts, held.maybe_stored) == ("pending", attempt - 1, maybe_stored), held.reason
    reason = held.reason or ""
    assert reason.startswith("the EHR's CapabilityStatement could not be read (fhir_server_error: "), reason
    assert reason.endswith(AGAIN_OR_SEARCHED if maybe_stored else "the note is sent once it can be"), reason
    assert round(held_s(held)) == CONFIG.backoff_s(max(attempt - 1, 1))
    assert any(note.id in r.getMessage() and "fhir_server_error" in r.getMessage() for r in caplog.records)
    sb.admin.clear_faults()
    assert write_note(world.env, CONFIG, held.id).version == held.version  # not due yet: nothing asked
    due_now(world, held.id)
    done = write_note(world.env, CONFIG, held.id)
    [doc] = server_notes(world, conn, sb, note)
    assert (done.state, done.ehr_resource_id, done.attempts) == ("written", doc["id"], attempt), done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts + 1


@pytest.mark.parametrize("spent", [False, True])
def test_dwb32_40_a_resumed_note_whose_post_was_recorded_waits_as_maybe_stored_and_is_written_once(
    world, start_sandbox, http, request_log, caplog: pytest.LogCaptureFixture, spent
) -> None:
    """With ``doc_posted`` the POST may be in the EHR (here it is: its run was killed after it): the unreadable
    statement holds it ``pending`` with ``maybe_stored`` (so it is only POSTed again with If-None-Exist, or searched
    for), its reason and a warning saying why; tries spent, it is searched for at once. Before, it was left
    ``sending`` unchanged, no reason, no warning, asked for every ``stalled_after_s`` for ever and, tries spent, never
    searched for while the statement stayed unreadable."""
    config = replace(CONFIG, max_attempts=1) if spent else CONFIG
    sb = start_sandbox()
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)  # stored, its answer lost
    stored = write_note(world.env, replace(CONFIG, backoff_base_s=0.0, backoff_cap_s=0.0), note.id)
    assert (stored.state, stored.maybe_stored) == ("pending", True), stored.reason
    sb.admin.clear_faults()
    # the state a run killed just after that POST leaves: ``sending``, ``doc_posted``, nothing else known
    resumed = transition(world.env.db, stored, "sending", attempts=1, doc_posted=True, maybe_stored=False)
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    sb.admin.set_fault("500", path=METADATA, times=None)
    with caplog.at_level("WARNING", logger="engine.writeback"):
        left = write_note(world.env, config, resumed.id)
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts  # never POSTed while the statement is unread
    if spent:  # the identifier search finds it
        assert left.state == "written", left.reason
    else:
        assert (left.state, left.maybe_stored, left.attempts) == ("pending", True, 1), left.reason
        assert (left.reason or "").startswith("the EHR's CapabilityStatement could not be read (fhir_server_error: ")
        assert (left.reason or "").endswith(AGAIN_OR_SEARCHED), left.reason  # before: "... sent once it can be"
        assert any(note.id in r.getMessage() and "fhir_server_error" in r.getMessage() for r in caplog.records)
        sb.admin.clear_faults()
        due_now(world, left.id)
        left = write_note(world.env, config, left.id)
    [doc] = server_notes(world, conn, sb, note)
    assert (left.state, left.ehr_resource_id) == ("written", doc["id"]), left.reason
