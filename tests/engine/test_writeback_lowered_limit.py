"""``max_attempts`` lowered between runs (the ``writeback`` resource, or one run's config): a note due for a try whose
tries already reach the new limit is never POSTed once more. It ends as its tries-spent path would: ``failed``
``retries_exhausted``, the reason naming the limit; searched for by its identifier when an earlier POST may be
stored (``maybe_stored``). Against the sandbox EHR over a real socket."""

from __future__ import annotations

import pytest

from engine.writeback import write_note
from store.outbox import get_note, transition
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"
#: tries the note made under the earlier limit (8, the default); ``FAST`` allows 3
_MADE = 5


def _left_by_earlier_runs(world, conn, state: str, maybe_stored: bool):
    """A note with ``_MADE`` tries: back in ``pending`` after a 503 to its last, or its run killed in ``sending``
    before that try's DocumentReference POST (the try counted as it went to ``sending``)."""
    note = enqueue(world, conn)
    made = _MADE + (1 if state == "sending" else 0)
    note = transition(world.env.db, note, "sending", attempts=made, detail={"attempt": made})
    if state == "pending":
        note = transition(
            world.env.db,
            note,
            "pending",
            reason_code="fhir_server_error",
            last_http_status=503,
            maybe_stored=maybe_stored,
        )
    elif maybe_stored:  # an earlier try's answer was lost: its POST may be stored
        note = transition(world.env.db, note, "sending", maybe_stored=True)
    return note


@pytest.mark.parametrize("state", ["pending", "sending"])
def test_a_note_whose_tries_reach_a_lowered_limit_fails_naming_it_never_posted(
    world, start_sandbox, http, request_log, state
) -> None:
    ehr = start_sandbox()
    conn = writable_connection(world, ehr, http)
    note = _left_by_earlier_runs(world, conn, state, maybe_stored=False)
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == [] and server_notes(world, conn, ehr, note) == []
    assert (done.state, done.reason_code, done.attempts) == ("failed", "retries_exhausted", _MADE)
    assert done.reason is not None and "max_attempts (3)" in done.reason and f"{_MADE} tries" in done.reason
    if state == "pending":
        assert "fhir_server_error" in done.reason and done.last_http_status == 503


@pytest.mark.parametrize("state", ["pending", "sending"])
def test_a_note_that_may_be_stored_with_its_tries_at_a_lowered_limit_is_searched_for_never_posted(
    world, start_sandbox, http, request_log, state
) -> None:
    ehr = start_sandbox()  # conditional create: under the old limit it would be POSTed again with If-None-Exist
    conn = writable_connection(world, ehr, http)
    note = _left_by_earlier_runs(world, conn, state, maybe_stored=True)
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == []
    assert len(request_log.paths(DOC_POSTS, "GET")) >= 1  # the identifier search looked
    assert (done.state, done.reason_code) == ("unknown", "response_lost")  # found nowhere: for a person
    assert get_note(world.env.db, note.id) == done
