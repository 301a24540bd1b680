"""The identifier search behind reconciliation (DWB-32/33) over a listing that comes back incomplete: offset paging
that repeats one match and skips another (sandbox ``search_moved_match``, real socket), pages that always overlap by
one (``search_overlap``), next links that never end (a scripted server), and pages trickled (``trickle``)."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest

from connectors.errors import SearchIncompleteError, StepBudgetExceededError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from engine.writeback import write_note
from engine.writeback.lookup import find_by_identifier
from engine.writeback.preflight import build_payload
from store.outbox import transition
from tests.engine.fake_fhir import FakeFhir, bundle, serve
from tests.engine.test_writeback_outcomes import _DRAFT
from tests.engine.writeback_helpers import FAST, enqueue, patient_notes, server_notes, writable_connection

DOC = "/fhir/DocumentReference"


def test_dwb32_a_duplicate_skipped_by_shifted_paging_is_still_found(world, start_sandbox, http) -> None:
    """DWB-32: two notes carry the draft's identifier (one page each); the second page repeats the first match and
    skips the other. Stopping there took the draft as written once; the search is made again and finds both:
    ``duplicate_notes``, for a person."""
    ehr = start_sandbox(conditional_create=False, max_count=1)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    for _ in range(2):
        client.create(build_payload(note, "preliminary"))
    assert len(server_notes(world, conn, ehr, note)) == 2
    lost = transition(world.env.db, note, "unknown", reason_code="response_lost", reason=None)
    ehr.admin.set_fault("search_moved_match", path="/fhir/DocumentReference", times=1)
    done = write_note(world.env, FAST, lost.id)
    assert (done.state, done.reason_code) == ("failed", "duplicate_notes")


def test_dwb32_33_a_note_on_page_three_of_pages_that_always_overlap_is_found(world, start_sandbox, http) -> None:
    """DWB-32/33: a server ignoring the identifier parameter silently (the patient's other notes come back, one a
    page) whose pages always overlap by one entry. The lost note is on page 3 or later; every pass used to stop at
    page 2 (a match came again), so it stayed ``unknown`` for a person. The lookup reads every page, takes the
    repeated entry for the same note (not a duplicate) and finds it: ``written`` with its id."""
    ehr = start_sandbox(conditional_create=False, ignored_search_params=["identifier"], max_count=1)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)  # the patient's notes the sandbox holds come first in its order
    ehr.admin.set_fault("drop_response", path=DOC, method="POST", times=1)  # stored, answer lost
    ehr.admin.set_fault("search_overlap", path=DOC, times=None)
    done = write_note(world.env, FAST, note.id)
    ehr.admin.clear_faults()
    ehr.admin.settings(ignored_search_params=[])  # so the checks below can search
    [doc] = server_notes(world, conn, ehr, note)
    assert [d["id"] for d in patient_notes(world, conn, ehr)].index(doc["id"]) >= 2  # page 3 or later (one a page)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", doc["id"], None)


def test_dwb32_next_links_that_never_end_are_bounded() -> None:
    """A server whose pages each link to a new page, each with a note not carrying the draft's identifier (empty
    ones end sooner: ``MAX_EMPTY_PAGES``): the search stops after a bounded number of pages and proves nothing (it
    used to follow them for ever)."""
    fake = FakeFhir()
    served = {"n": 0}

    def page(_p: str, _q: dict[str, list[str]]):  # type: ignore[no-untyped-def]
        served["n"] += 1
        other = {"resourceType": "DocumentReference", "id": f"other-{served['n']}"}
        return bundle(
            [other], next_url=f"{fake.fhir_base}/DocumentReference?page={served['n']}" if served["n"] < 500 else None
        )

    fake.routes["/fhir/DocumentReference"] = page
    with serve(fake), httpx.Client() as http:
        client = FhirClient(fake.fhir_base, StaticTokenSource("tok"), http=http)
        with pytest.raises(SearchIncompleteError) as raised:
            find_by_identifier(client, _DRAFT, FAST)  # type: ignore[arg-type]
    assert served["n"] <= 100 and raised.value.reason == "too_many_pages"


def test_dwb32_a_trickled_identifier_search_ends_within_its_budget_and_leaves_the_note_unknown(
    world, start_sandbox, http, request_log
) -> None:
    """DWB-32: the EHR trickles its search answers (a byte every 0.5 s). The lookup had no bound of its own: 3 passes
    x 20 pages x the request deadline (120 s), hours holding the run. Now ``lookup_wait_s`` bounds it: the note stays
    ``unknown`` (its reason code kept, the reason naming the budget), never failed or sent again, and a later
    search finds it: written once."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    client.create(build_payload(note, "preliminary"))  # stored; its answer was lost
    lost = transition(world.env.db, note, "unknown", reason_code="response_lost", reason=None)
    ehr.admin.set_fault("trickle", path=DOC, method="GET", times=None, delay_s=0.5)
    started = time.monotonic()
    first = write_note(world.env, replace(FAST, lookup_wait_s=2.0), lost.id)
    assert time.monotonic() - started < 60  # the request deadline alone allowed 120 s a page
    assert (first.state, first.reason_code) == ("unknown", "response_lost")
    assert "within its 2 s budget" in (first.reason or "")
    assert write_note(world.env, replace(FAST, lookup_wait_s=2.0), lost.id).version == first.version  # said once
    ehr.admin.clear_faults()
    done = write_note(world.env, FAST, lost.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])
    assert len(request_log.paths(DOC, "POST")) == 1


def test_a_lookup_out_of_time_names_lookup_wait_s_not_the_sync_step_budget(world, start_sandbox, http) -> None:
    """A trickled identifier search runs out of ``lookup_wait_s``: its error named ``EHRSYNC_STEP_BUDGET_S`` (the
    sync step's budget, which bounds no lookup), so an operator raising it changed nothing. It names the
    write-back's own setting now."""
    ehr = start_sandbox(conditional_create=False)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    ehr.admin.set_fault("trickle", path=DOC, method="GET", times=None, delay_s=0.5)
    with pytest.raises(StepBudgetExceededError) as raised:
        find_by_identifier(client, note, replace(FAST, lookup_wait_s=1.0))
    said = str(raised.value)
    assert "its 1 s budget (lookup_wait_s of the writeback resource)" in said and "EHRSYNC" not in said, said


def test_a_run_whose_identifier_search_ran_out_of_time_does_not_search_again(
    world, start_sandbox, http, request_log
) -> None:
    """A conditional POST stored with its answer lost, then refused (422): the identifier search decides first, and
    the EHR trickles it past ``lookup_wait_s``. The run then searched a second time to reconcile the note it had just
    made ``unknown``: two lookups, up to 2 x ``lookup_wait_s`` (5 min each). Now the one search's outcome settles it:
    ``unknown``, the reason naming the budget, one search in the run."""
    ehr = start_sandbox()
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    ehr.admin.set_fault("drop_response", path=DOC, method="POST", times=None)  # stored, answer lost
    assert write_note(world.env, FAST, note.id).maybe_stored
    ehr.admin.clear_faults()
    ehr.admin.set_fault("422", path=DOC, method="POST", times=None)
    ehr.admin.set_fault("trickle", path=DOC, method="GET", times=None, delay_s=0.5)
    request_log.clear()
    done = write_note(world.env, replace(FAST, lookup_wait_s=1.0), note.id)
    assert (done.state, done.reason_code) == ("unknown", "response_lost")
    assert "within its 1 s budget" in (done.reason or "")
    assert len([url for url in request_log.paths(DOC) if "identifier" in str(url.params)]) == 1
    assert len(request_log.paths(DOC, "POST")) == 1


def test_an_accepted_note_whose_last_search_ran_out_of_time_does_not_say_no_search_found_it(
    world, start_sandbox, http
) -> None:
    """A bare 202 on its last check, whose identifier search the EHR trickles past ``lookup_wait_s``: it is left for
    a person (``accepted_unconfirmed``), and its reason said "no identifier search found it", as if the EHR had been
    searched and did not hold it. It says the last search did not end within its budget now."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=10_000.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    config = replace(FAST, max_attempts=1, lookup_wait_s=1.0)
    first = write_note(world.env, config, note.id)  # POSTed (its one attempt), searched: not filed yet
    assert (first.state, first.reason_code) == ("unknown", "accepted")
    ehr.admin.set_fault("trickle", path=DOC, method="GET", times=None, delay_s=0.5)
    last = write_note(world.env, config, note.id)
    assert (last.state, last.reason_code) == ("unknown", "accepted_unconfirmed")
    assert "did not end within its 1 s budget" in (last.reason or ""), last.reason
    assert "no identifier search found it" not in (last.reason or "")


def test_an_accepted_note_whose_search_ends_again_no_longer_says_it_ran_out_of_time(world, start_sandbox, http) -> None:
    """A bare 202 whose second check's identifier search the EHR trickles past ``lookup_wait_s``: the reason says so.
    The third check's search ends and finds nothing (the EHR has not filed it yet). Before, the reason still said the
    search did not end within its budget (a slow EHR), which no longer held; now it is the accepted note's own again,
    and the note is still searched again by itself."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=10_000.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    config = replace(FAST, max_attempts=3, lookup_wait_s=1.0)
    first = write_note(world.env, config, note.id)  # POSTed, searched: not filed yet
    assert (first.state, first.reason_code) == ("unknown", "accepted")
    ehr.admin.set_fault("trickle", path=DOC, method="GET", times=None, delay_s=0.5)
    slow = write_note(world.env, config, note.id)
    assert "did not end within its 1 s budget" in (slow.reason or ""), slow.reason
    ehr.admin.clear_faults()
    done = write_note(world.env, config, note.id)
    assert (done.state, done.reason_code, done.attempts) == ("unknown", "accepted", 3)
    assert done.reason == first.reason, done.reason
