"""A note left in ``sending`` by a killed run, resumed: sent on when its DocumentReference was never POSTed, searched
for when it may have been (``doc_posted``, committed just before that POST), against the sandbox EHR over a real
socket. The run is a real process SIGKILLed at an engine checkpoint (``tests.engine.writeback_driver``)."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest

from engine.writeback import write_note
from store.models import Connection
from store.outbox import get_note, transition
from tests.engine.helpers import make_environment
from tests.engine.writeback_helpers import (
    FAST,
    binary_pdf_note,
    due_now,
    enqueue,
    run_writeback_child,
    server_notes,
    set_tenant,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"
BINARY_POSTS = "/fhir/Binary"
#: Notes over 100 bytes go through a Binary (the test note is a 200-byte PDF); its job polled within a short bound.
VIA_BINARY = replace(FAST, inline_max_bytes=100, accepted_poll_s=0.2, accepted_wait_s=1.0)


def _killed(tmp_path, start_sandbox, http, crash_at: str, **sandbox):
    """A PDF note going through a Binary accepted for later (202, filed 100 s on), its run SIGKILLed at ``crash_at``."""
    ehr = start_sandbox(
        **{"create_answer": "async", "create_answer_types": ["Binary"], "create_async_delay_s": 100.0} | sandbox
    )
    root = tmp_path / "world"
    world = make_environment(root, http=http)
    conn, note = binary_pdf_note(world, ehr, http)
    killed = run_writeback_child(root, world, note.id, crash_at, inline_max_bytes=100)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return ehr, world, conn, note


@pytest.mark.parametrize("conditional", [False, True])
def test_dwb18_32_a_run_killed_while_polling_its_binary_is_resumed_and_written_once(
    tmp_path, start_sandbox, http, request_log, conditional
) -> None:
    """DWB-18/32/34: a run killed while it polls the note's Binary job leaves the note ``sending``, the
    DocumentReference never POSTed. Without conditional create the resumed run sent it to ``unknown`` (searched for,
    found nowhere: for a person, who would write the note again). Now it asks the same Binary job again (still
    filing: back to ``pending``, ``binary_pending``), then POSTs once: one note on the EHR, referencing one Binary."""
    ehr, world, conn, note = _killed(
        tmp_path, start_sandbox, http, "writeback.binary_job", conditional_create=conditional
    )
    left = get_note(world.env.db, note.id)
    assert left is not None and (left.state, left.doc_posted, left.binary_posts) == ("sending", False, 1)
    assert left.binary_status_url
    request_log.clear()  # what the resumed runs send (the killed child's requests are not logged here)
    waiting = write_note(world.env, VIA_BINARY, note.id)  # the EHR is still filing the Binary
    assert (waiting.state, waiting.reason_code) == ("pending", "binary_pending"), waiting.reason
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    done = write_note(world.env, replace(VIA_BINARY, accepted_wait_s=30.0), note.id)
    assert (done.state, done.maybe_stored) == ("written", False), done.reason
    [doc] = server_notes(world, conn, ehr, note)
    assert (doc["id"], doc["content"][0]["attachment"]["url"]) == (done.ehr_resource_id, f"Binary/{done.binary_id}")
    assert request_log.paths(BINARY_POSTS, "POST") == []  # the killed run's one Binary (``binary_posts`` 1)
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


@pytest.mark.parametrize(
    ("crash_at", "stored"),
    [
        ("writeback.posting", False),  # the POST recorded, killed before it left: cannot be told from a lost answer
        ("writeback.sent", True),  # the EHR stored it and answered; the answer died with the run
    ],
)
def test_dwb32_a_note_whose_post_was_recorded_is_searched_for_never_sent_again(
    tmp_path, start_sandbox, http, request_log, crash_at, stored
) -> None:
    """DWB-32/34: once its DocumentReference POST is recorded (``doc_posted``) a resumed note without conditional create
    may be in the EHR: it goes to the identifier search, never POSTed again. Found: ``written``; not found:
    ``unknown`` for a person. The Binary it references is settled first and never POSTed again either."""
    ehr, world, conn, note = _killed(
        tmp_path, start_sandbox, http, crash_at, conditional_create=False, create_async_delay_s=0.0
    )
    left = get_note(world.env.db, note.id)
    assert left is not None and (left.state, left.doc_posted, left.binary_posts) == ("sending", True, 1)
    assert left.binary_id
    request_log.clear()  # what the resumed run sends (the killed child's requests are not logged here)
    resumed = write_note(world.env, VIA_BINARY, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == request_log.paths(BINARY_POSTS, "POST") == []  # never sent again
    found = server_notes(world, conn, ehr, note)
    if stored:
        assert resumed.state == "written" and [d["id"] for d in found] == [resumed.ehr_resource_id]
    else:
        assert (resumed.state, resumed.reason_code, found) == ("unknown", "response_lost", [])


def _hold(tmp_path, world, sb, http, conn: str, note_id: str, hold: str):
    """The resumed run meeting ``hold``, what it leaves; then the hold is ended (connection active, setting fixed)."""
    if hold == "statement_unread":
        sb.admin.set_fault("500", path="/fhir/metadata", times=None)
        held = write_note(world.env, FAST, note_id)
        sb.admin.clear_faults()
    elif hold == "key_missing":
        keyless = make_environment(
            tmp_path / "world", http=http, cipher_key=os.urandom(32), tenant_id=world.tenant_id, migrate=False
        )
        held = write_note(keyless.env, FAST, note_id)
    elif hold == "tenant_setting":
        set_tenant(world, enableWrite="true")  # neither true nor false
        held = write_note(world.env, FAST, note_id)
        set_tenant(world)
    else:
        _connection_status(world, conn, "needs_reauth")
        held = write_note(world.env, FAST, note_id)
        _connection_status(world, conn, "active")
    return held


def _connection_status(world, conn: str, status: str) -> None:
    with world.env.db.session() as session:
        row = session.get(Connection, conn)
        assert row is not None
        row.status = status
        session.commit()


@pytest.mark.parametrize("hold", ["statement_unread", "key_missing", "tenant_setting", "connection"])
def test_a_last_try_killed_before_its_post_then_held_is_counted_once(
    tmp_path, world, sb, http, request_log, hold
) -> None:
    """A run SIGKILLed on the note's last try (FAST: the 3rd of 3) after ``sending`` and before its POST; the resumed
    run cannot go on (``/metadata`` answering 500, a process without the token's key, a tenant switch stored as a
    string, or, for a note an earlier POST of which may be stored, its connection needing a new authorization) and
    holds the note. The dead run's try POSTed nothing: the hold gives it back, and the run that sends the note counts
    it again: 3 of 3, one POST. Before, the hold kept it and the sending run counted one more: 4 of 3 (9 of 8 with
    the defaults)."""
    last = FAST.max_attempts
    conn = writable_connection(world, sb, http)
    maybe_stored = hold == "connection"  # only such a note waits for its connection (one never sent is failed)
    note = transition(world.env.db, enqueue(world, conn), "pending", attempts=last - 1, maybe_stored=maybe_stored)
    killed = run_writeback_child(tmp_path / "world", world, note.id, "writeback.sending")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = get_note(world.env.db, note.id)
    assert left is not None and (left.state, left.attempts, left.doc_posted) == ("sending", last, False)
    held = _hold(tmp_path, world, sb, http, conn, note.id, hold)
    assert (held.state, held.attempts, held.maybe_stored) == ("pending", last - 1, maybe_stored), held.reason
    due_now(world, note.id)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, sb, note)
    assert (done.state, done.ehr_resource_id, done.attempts) == ("written", doc["id"], last), done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1


def test_a_last_try_that_may_be_stored_killed_before_its_post_waits_for_the_statement(
    tmp_path, world, sb, http, request_log
) -> None:
    """As above, an earlier try's answer lost (``maybe_stored``): the last try, killed before its POST, POSTed
    nothing, so the note's tries are not spent and ``/metadata`` answering 500 holds it (its try given back) as it
    holds a note never sent; once the statement reads, one POST with If-None-Exist: 3 of 3. Before, the resumed run
    took the dead try as spent and ran the identifier search at once; finding nothing, it failed the note
    (``retries_exhausted``) on the statement's 500, an outage failing a note that had a try left."""
    last = FAST.max_attempts
    conn = writable_connection(world, sb, http)
    note = transition(world.env.db, enqueue(world, conn), "pending", attempts=last - 1, maybe_stored=True)
    killed = run_writeback_child(tmp_path / "world", world, note.id, "writeback.sending")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = get_note(world.env.db, note.id)
    assert left is not None and (left.state, left.attempts, left.doc_posted) == ("sending", last, False)
    sb.admin.set_fault("500", path="/fhir/metadata", times=None)
    held = write_note(world.env, FAST, note.id)
    sb.admin.clear_faults()
    assert (held.state, held.attempts, held.maybe_stored) == ("pending", last - 1, True), held.reason
    assert request_log.paths(DOC_POSTS) == []  # not searched for: its tries are not spent
    due_now(world, note.id)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, sb, note)
    assert (done.state, done.ehr_resource_id, done.attempts) == ("written", doc["id"], last), done.reason
    assert len(request_log.paths(DOC_POSTS, "POST")) == 1
