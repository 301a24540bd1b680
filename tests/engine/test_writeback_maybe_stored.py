"""A note whose earlier POST may have been stored is never ended ``failed`` or ``blocked`` before the identifier
search has looked (draft-note §5, DWB-31/32/34), against the sandbox EHR.

With If-None-Exist a lost answer is retried; if a later try is then refused (422, or throttled until the attempts are
spent), ``failed`` would tell a person the EHR holds nothing, and they would write the note a second time although
the first POST was stored. The same holds for a note resumed after a run was killed while sending it."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from engine.environment import SyncEnvironment
from engine.writeback import WritebackConfig, write_note
from store.models import Connection
from store.outbox import get_note, transition
from tests.engine.helpers import make_environment
from tests.engine.writeback_helpers import FAST, enqueue, run_writeback_child, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb34_a_refusal_after_a_stored_post_whose_answer_was_lost_is_written_not_failed(world, sb, http) -> None:
    """The first POST is stored and its answer lost; the retry is refused (422): the search finds the note."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)  # stored once (If-None-Exist)
    first = write_note(world.env, FAST, note.id)
    assert (first.state, first.maybe_stored) == ("pending", True)
    sb.admin.clear_faults()
    sb.admin.set_fault("422", path=DOC_POSTS, method="POST", times=None)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, sb, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


@pytest.mark.parametrize("kind", ["422", "429"])
def test_dwb34_a_retry_inside_one_post_answered_no_after_its_lost_answer_still_counts_as_maybe_stored(
    world, sb, http, request_log, kind
) -> None:
    """One conditional POST, retried by the transport: its first try is stored and its answer lost, its second is
    refused (422) or throttled on every try left (429). The second answer says nothing of the first.
    Before, the note took it as its whole outcome: ``failed`` with the 422 (the EHR holding the note, a person would
    write it again), or ``pending`` without ``maybe_stored`` (later failed or sent unconditionally, unsearched). Now
    the search looks first: the 422 ends ``written`` with the stored note; the 429 is tried again, ``maybe_stored``."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    sb.admin.set_fault(kind, path=DOC_POSTS, method="POST", times=None, retry_after="0")
    done = write_note(world.env, FAST, note.id)
    assert len(request_log.paths(DOC_POSTS, "POST")) > 1  # one create: its first try and the transport's retries
    [doc] = server_notes(world, conn, sb, note)
    if kind == "422":
        assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason
    else:
        assert (done.state, done.maybe_stored) == ("pending", True), done.reason


def test_dwb34_a_refusal_after_a_post_lost_before_the_ehr_stored_it_stands(world, sb, http) -> None:
    """The first POST never reached the EHR; the retry is refused: the search the server applied finds nothing, so
    the refusal stands (``failed`` with the server's reason), not ``unknown``."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop", path=DOC_POSTS, method="POST", times=None)
    assert write_note(world.env, FAST, note.id).state == "pending"
    sb.admin.clear_faults()
    sb.admin.set_fault("422", path=DOC_POSTS, method="POST", times=None)
    done = write_note(world.env, FAST, note.id)
    assert server_notes(world, conn, sb, note) == []
    assert (done.state, done.last_http_status) == ("failed", 422)
    assert done.reason_code != "response_lost"


def test_dwb34_throttled_until_out_of_attempts_after_a_lost_answer_is_reconciled_not_failed(world, sb, http) -> None:
    """Stored, answer lost, then 429 on every later try (searches too): the note ends ``unknown``, and once the
    server answers again the search finds it: ``written`` with its id, one note on the EHR."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)
    states = [write_note(world.env, FAST, note.id).state]
    sb.admin.clear_faults()
    sb.admin.set_fault("429", path=DOC_POSTS, times=None, retry_after="0")
    states += [write_note(world.env, FAST, note.id).state for _ in range(FAST.max_attempts - 1)]
    assert states == ["pending"] * (FAST.max_attempts - 1) + ["unknown"]
    sb.admin.clear_faults()
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, sb, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


def test_dwb34_throttled_out_of_attempts_with_nothing_stored_still_fails(world, sb, http) -> None:
    """Throttled on every try from the first (429 proves nothing was stored): ``failed``, no search needed."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("429", path=DOC_POSTS, times=None, retry_after="0")
    states = [write_note(world.env, FAST, note.id).state for _ in range(FAST.max_attempts)]
    assert states == ["pending"] * (FAST.max_attempts - 1) + ["failed"]
    assert get_note(world.env.db, note.id).reason_code == "retries_exhausted"  # type: ignore[union-attr]


def test_dwb34_a_note_resumed_after_a_killed_send_then_throttled_out_is_reconciled(
    tmp_path, start_sandbox, http
) -> None:
    """A run killed after the EHR stored the note (before ``written`` was committed); the resumed run is throttled
    until its attempts are spent: not ``failed``; the next run finds the note."""
    ehr = start_sandbox()
    root = tmp_path / "world"
    world = make_environment(root, http=http)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    killed = run_writeback_child(root, world, note.id, "writeback.sent")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ehr.admin.set_fault("429", path=DOC_POSTS, times=None, retry_after="0")
    states = [write_note(world.env, FAST, note.id).state for _ in range(FAST.max_attempts)]
    assert states[-1] == "unknown" and "failed" not in states
    ehr.admin.clear_faults()
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


def _stored_then_lost(world, sb, http) -> tuple[str, str]:
    """A note whose conditional POST was stored and its answer lost: back to ``pending`` with ``maybe_stored``."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)
    assert write_note(world.env, FAST, note.id).maybe_stored
    sb.admin.clear_faults()
    return conn, note.id


def _status(world, connection_id: str, status: str) -> None:
    with world.env.db.session() as session:
        session.get(Connection, connection_id).status = status
        session.commit()


def _grant_refused_at(sb, method: str) -> None:
    """Every ``method`` request to DocumentReference is answered 401, and the refresh it makes is refused
    (``invalid_grant``): the connection needs re-authorization."""
    sb.admin.set_fault("expired_token", path=DOC_POSTS, method=method, times=None)
    sb.admin.set_fault("oauth_error", path="/oauth/token", times=None, error="invalid_grant")


def _reauthorized_then_found(
    world, sb, conn: str, note_id: str, config: WritebackConfig = FAST, *, fault: tuple[str, str] | None = None
) -> None:
    """The grant is back (the sandbox's faults cleared, the connection ``active`` again; then ``fault``, a kind and a
    path, armed when given): one run finds the stored note, ``written`` with its id."""
    sb.admin.clear_faults()
    _status(world, conn, "active")
    if fault is not None:
        sb.admin.set_fault(fault[0], path=fault[1], times=None)
    done = write_note(world.env, config, note_id)
    [doc] = server_notes(world, conn, sb, get_note(world.env.db, note_id))
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason


def test_dwb34_a_note_that_may_be_stored_waits_out_a_grant_that_is_gone(world, sb, http) -> None:
    """The connection needs re-authorization before the retry: the note is neither failed (the EHR may hold it)
    nor sent; once the grant is back, the next run finds the stored note: ``written``, one note on the EHR."""
    conn, note_id = _stored_then_lost(world, sb, http)
    _status(world, conn, "needs_reauth")
    left = write_note(world.env, FAST, note_id)
    assert (left.state, left.maybe_stored) == ("pending", True)
    _reauthorized_then_found(world, sb, conn, note_id)


def test_dwb32_a_note_that_may_be_stored_is_never_resent_once_conditional_create_is_gone(
    world, sb, http, request_log
) -> None:
    """The server stops advertising If-None-Exist between attempts: the retry would be a blind POST, so the note
    goes to the identifier search instead (found: ``written``), and one note stays on the EHR."""
    conn, note_id = _stored_then_lost(world, sb, http)
    sb.admin.settings(conditional_create=False)
    fresh = SyncEnvironment(**{**vars(world.env), "_capabilities": {}})  # a later run reads the new statement
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    done = write_note(fresh, FAST, note_id)
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts
    [doc] = server_notes(world, conn, sb, get_note(world.env.db, note_id))
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"])


def test_a_note_that_may_be_stored_waits_for_a_rejected_client_and_is_unknown_once_disconnected(
    world, sb, http, request_log
) -> None:
    """``client_rejected`` (an admin can retry it): the note waits, ``pending`` with the reason
    ``connection_client_rejected``, and a second run while it waits changes nothing (no new version, no event). The
    connection disconnected meanwhile can never search for it: ``unknown`` for a person. Nothing is POSTed again."""
    conn, note_id = _stored_then_lost(world, sb, http)
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    _status(world, conn, "client_rejected")
    waiting = write_note(world.env, FAST, note_id)
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == ("pending", True, "connection_client_rejected")
    assert write_note(world.env, FAST, note_id).version == waiting.version
    _status(world, conn, "disconnected")
    gone = write_note(world.env, FAST, note_id)
    assert (gone.state, gone.reason_code) == ("unknown", "connection_disconnected")
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts


def test_a_note_left_sending_by_a_dead_run_is_never_left_sending_when_its_connection_cannot_write(
    world, sb, http, request_log
) -> None:
    """A ``sending`` note whose POST may be stored (``doc_posted``) resumed while the connection needs
    re-authorization waits in ``pending`` with ``maybe_stored``; resumed while the connection is disabled, it is
    ``unknown``. Before, both stayed ``sending`` and were resumed every stalled period for ever."""
    conn = writable_connection(world, sb, http)
    first = transition(world.env.db, enqueue(world, conn), "sending", attempts=1, doc_posted=True)
    second = transition(world.env.db, enqueue(world, conn), "sending", attempts=1, doc_posted=True)
    _status(world, conn, "needs_reauth")
    waiting = write_note(world.env, FAST, first.id)
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == ("pending", True, "connection_needs_reauth")
    _status(world, conn, "disabled")
    assert (write_note(world.env, FAST, second.id).state, get_note(world.env.db, second.id).reason_code) == (
        "unknown",
        "connection_disabled",
    )
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_a_note_left_sending_before_its_post_was_recorded_is_failed_when_its_connection_cannot_write(
    world, sb, http, request_log
) -> None:
    """A ``sending`` note whose DocumentReference was never POSTed (no ``doc_posted``: its run died before, e.g.
    polling its Binary's job) is as a note never sent: its connection disabled, it is ``failed``
    (``connection_disabled``), which a person may send again. Before, it was ``unknown`` for a person to search."""
    conn = writable_connection(world, sb, http)
    left = transition(world.env.db, enqueue(world, conn), "sending", attempts=1)
    _status(world, conn, "disabled")
    done = write_note(world.env, FAST, left.id)
    assert (done.state, done.reason_code, done.maybe_stored) == ("failed", "connection_disabled", False)
    assert request_log.paths(DOC_POSTS, "POST") == []


@pytest.mark.parametrize("lost", ["an earlier attempt", "this POST's first try"])
def test_dwb34_a_grant_refused_during_the_post_of_a_note_that_may_be_stored_waits_then_finds_it(
    world, sb, http, request_log, lost
) -> None:
    """The note's POST may be stored (an earlier attempt's answer lost, or this POST's first try's, the transport's
    retry then answered 401); the retry's token refresh is refused (``invalid_grant``): the connection needs
    re-authorization. Before, the write-back searched at once with the refused grant, and the search failing left
    the note ``unknown`` for a person (who might write it again). Now it waits as ``_advance`` makes it wait:
    ``pending``, ``maybe_stored``, ``connection_needs_reauth``; once re-authorized, one run finds the stored note."""
    if lost == "an earlier attempt":
        conn, note_id = _stored_then_lost(world, sb, http)
    else:
        conn = writable_connection(world, sb, http)
        note_id = enqueue(world, conn).id
        sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    _grant_refused_at(sb, "POST")
    waiting = write_note(world.env, FAST, note_id)
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == ("pending", True, "connection_needs_reauth")
    assert write_note(world.env, FAST, note_id).version == waiting.version  # waits: nothing sent, nothing moved
    _reauthorized_then_found(world, sb, conn, note_id)  # the grant's access token still works on the sandbox


def test_dwb34_a_refusal_whose_search_finds_the_grant_refused_waits_then_finds_the_note(world, sb, http) -> None:
    """A note that may be stored is refused (422); the identifier search that must look first is answered 401 and the
    refresh refused. Before, the search's failure left the note ``unknown`` for a person; now it waits for the
    re-authorization (``pending``, ``maybe_stored``), and then one run finds the stored note."""
    conn, note_id = _stored_then_lost(world, sb, http)
    sb.admin.set_fault("422", path=DOC_POSTS, method="POST", times=1)
    _grant_refused_at(sb, "GET")  # the identifier search
    waiting = write_note(world.env, FAST, note_id)
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == ("pending", True, "connection_needs_reauth")
    _reauthorized_then_found(world, sb, conn, note_id)


def test_dwb34_a_note_that_waited_on_its_last_attempt_is_searched_not_failed_when_the_server_is_down(
    world, sb, http
) -> None:
    """The last attempt's POST is stored, its answer lost, and the transport's retry meets a refused grant: the note
    waits (its attempts spent). Re-authorized, the woken run cannot read the CapabilityStatement (503). Before, that
    "try again later" ended it ``failed`` (``retries_exhausted``) while the EHR held it: a person would write it
    again. Now the identifier search decides first, as after any answer that would end a note that may be stored."""
    last = replace(FAST, max_attempts=1)
    conn = writable_connection(world, sb, http)
    note_id = enqueue(world, conn).id
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    _grant_refused_at(sb, "POST")
    waiting = write_note(world.env, last, note_id)
    assert (waiting.state, waiting.maybe_stored, waiting.attempts) == ("pending", True, 1)
    _reauthorized_then_found(world, sb, conn, note_id, last, fault=("503", "/fhir/metadata"))


@pytest.mark.parametrize("lost", ["drop_response", "drop"])
def test_dwb34_a_note_that_waited_with_its_tries_spent_is_searched_never_posted_again(
    world, sb, http, request_log, lost
) -> None:
    """Every try's answer but the last is lost (``drop_response``: the first try stored the note; ``drop``: nothing
    reached the EHR); the last try's POST is answered 401 and the refresh refused: the note waits for its connection
    with its tries spent. Before, the run once the connection was active again POSTed it once more, ``attempts`` 4
    of ``max_attempts`` 3 (docs/WRITEBACK.md "at most N tries"). Now that run searches at once, no POST: found,
    ``written``; not found, ``unknown`` for a person (as when the last try's own answer is lost)."""
    conn = writable_connection(world, sb, http)
    note_id = enqueue(world, conn).id
    sb.admin.set_fault(lost, path=DOC_POSTS, method="POST", times=None)
    for _ in range(FAST.max_attempts - 1):
        assert write_note(world.env, FAST, note_id).state == "pending"
    sb.admin.clear_faults()
    _grant_refused_at(sb, "POST")
    waiting = write_note(world.env, FAST, note_id)
    assert (waiting.state, waiting.reason_code, waiting.attempts) == ("pending", "connection_needs_reauth", 3)
    sb.admin.clear_faults()
    _status(world, conn, "active")
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    done = write_note(world.env, FAST, note_id)
    assert (len(request_log.paths(DOC_POSTS, "POST")), done.attempts) == (posts, FAST.max_attempts)
    stored = server_notes(world, conn, sb, done)
    if lost == "drop_response":
        assert (done.state, done.ehr_resource_id) == ("written", stored[0]["id"]), done.reason
    else:
        assert (done.state, done.reason_code, stored) == ("unknown", "response_lost", []), done.reason


@pytest.mark.parametrize("why", ["tries spent", "If-None-Exist gone"])
def test_dwb34_a_note_searched_instead_of_posted_waits_when_its_search_finds_the_grant_refused(
    world, sb, http, request_log, why
) -> None:
    """A ``pending`` note that may be stored is searched for instead of POSTed (``search_first``): its tries spent
    (the last POST answered 401, the refresh refused, then re-authorized) or If-None-Exist no longer advertised. That
    search is answered 401 and the refresh refused. Before, the note was ``unknown`` (``response_lost``) before the
    search looked, and the refused search left it so, for a person, though no search could look until the grant was
    back. Now it waits for the connection (``pending``, ``maybe_stored``, ``connection_needs_reauth``) as after any
    search a refused grant stopped; once re-authorized, one run finds the stored note. Nothing is POSTed again."""
    env = world.env
    if why == "tries spent":
        conn = writable_connection(world, sb, http)
        note_id = enqueue(world, conn).id
        sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)  # stored, the answers lost
        for _ in range(FAST.max_attempts - 1):
            assert write_note(env, FAST, note_id).state == "pending"
        sb.admin.clear_faults()
        _grant_refused_at(sb, "POST")
        assert write_note(env, FAST, note_id).attempts == FAST.max_attempts
        sb.admin.clear_faults()
        _status(world, conn, "active")
    else:
        conn, note_id = _stored_then_lost(world, sb, http)
        sb.admin.settings(conditional_create=False)
        env = SyncEnvironment(**{**vars(world.env), "_capabilities": {}})  # a later run reads the new statement
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    _grant_refused_at(sb, "GET")  # the identifier search
    waiting = write_note(env, FAST, note_id)
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == ("pending", True, "connection_needs_reauth")
    with world.env.db.session() as session:  # the sensor skips the note until the connection is active again
        assert session.get(Connection, conn).status == "needs_reauth"
    _reauthorized_then_found(world, sb, conn, note_id)
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts


@pytest.mark.parametrize("statement", ["read", "503"])
def test_dwb34_a_note_woken_with_its_tries_spent_and_found_nowhere_ends_alike_whatever_metadata_answers(
    world, sb, http, request_log, statement
) -> None:
    """Every try's answer but the last is lost, nothing reached the EHR (``drop``); the last try's POST is answered
    401, the refresh refused; re-authorized, the woken run reads the CapabilityStatement (``read``) or meets a 503
    there. Its tries are spent, so it is searched for, found nowhere: ``unknown`` for a person (``search_first``).
    Before, the 503 made the outcome ``failed`` (``retries_exhausted``, the reason the statement's 503): the
    statement read, a note no different was ``unknown``; the woken run makes no try for an answer to stand."""
    conn = writable_connection(world, sb, http)
    note_id = enqueue(world, conn).id
    sb.admin.set_fault("drop", path=DOC_POSTS, method="POST", times=None)
    for _ in range(FAST.max_attempts - 1):
        assert write_note(world.env, FAST, note_id).state == "pending"
    sb.admin.clear_faults()
    _grant_refused_at(sb, "POST")
    assert write_note(world.env, FAST, note_id).reason_code == "connection_needs_reauth"
    sb.admin.clear_faults()
    _status(world, conn, "active")
    if statement == "503":
        sb.admin.set_fault("503", path="/fhir/metadata", times=None)
    posts = len(request_log.paths(DOC_POSTS, "POST"))
    fresh = SyncEnvironment(**{**vars(world.env), "_capabilities": {}})  # the woken run reads the statement
    done = write_note(fresh, FAST, note_id)
    assert (done.state, done.reason_code, done.attempts) == ("unknown", "response_lost", FAST.max_attempts)
    assert len(request_log.paths(DOC_POSTS, "POST")) == posts
    assert server_notes(world, conn, sb, done) == []


def test_dwb34_a_note_resumed_after_its_last_post_left_is_never_failed_when_metadata_fails(
    world, sb, http, request_log
) -> None:
    """A run was killed after recording its last try's POST (``sending``, ``doc_posted``, ``max_attempts`` 1), which
    the EHR had not filed when the resumed run's search looked; that run cannot read the CapabilityStatement (503).
    Before, the 503 was taken as the last answer, the search finding nothing let it stand: ``failed``
    (``retries_exhausted``) though that POST may be stored. Now ``unknown`` for a person, never POSTed again."""
    last = replace(FAST, max_attempts=1)
    conn = writable_connection(world, sb, http)
    left = transition(world.env.db, enqueue(world, conn), "sending", attempts=1, doc_posted=True)
    sb.admin.set_fault("503", path="/fhir/metadata", times=None)
    done = write_note(world.env, last, left.id)
    assert (done.state, done.reason_code, done.attempts) == ("unknown", "response_lost", 1), done.reason
    assert request_log.paths(DOC_POSTS, "POST") == []
