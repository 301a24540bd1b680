"""DWB-31/63: a person's confirmed retry of a note whose EHR ignores ``identifier`` in ``If-None-Exist`` (Spark, its
issue #520), through the real auth service app, sent by the real engine to the sandbox over a real socket.

Before, such a note could never be written: the retry, confirmed or not, sent ``If-None-Exist: identifier=...``
again, the server matched the patient's other notes, and the note ended ``match_unconfirmed`` (one other note) or
``several_matches`` (412, several) again, for ever. Now the person's confirmation, where the note's own answers
show that behaviour, sends it once without ``If-None-Exist``; a plain retry still sends it with it, and a lost answer
to the unconditional POST is only searched for, never POSTed again blindly.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from connectors.fhir import FhirClient
from engine.writeback import write_note
from engine.writeback.lookup import carries_identifier
from engine.writeback.preflight import build_payload
from store.models import AuditEvent
from store.outbox import NoteRecord
from tests.engine.helpers import SyncWorld, make_environment
from tests.engine.retry_api import notes_api
from tests.engine.writeback_helpers import (
    FAST,
    enqueue,
    patient_notes,
    read_note,
    run_writeback_child,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"
#: A server that ignores the identifier parameter in searches and in If-None-Exist alike (Spark).
IGNORES_IDENTIFIER = {"ignored_search_params": ["identifier"], "if_none_exist_ignores_params": True}


def _patient_with(world: SyncWorld, ehr: Any, http: Any, fits: Callable[[int], bool]) -> str:
    """A writable connection of a patient whose count of DocumentReferences on the EHR ``fits``."""
    for patient in ehr.admin.patients():
        conn = writable_connection(world, ehr, http, patient_id=patient)
        if fits(len(patient_notes(world, conn, ehr))):
            return conn
    raise AssertionError("no sandbox patient has such a count of DocumentReferences")


def _details(world: SyncWorld, note_id: str, key: str) -> list[dict[str, Any]]:
    """The note's transition events' details that hold ``key`` (``retry``: a person's; ``doc_post``: a POST's)."""
    with world.env.db.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "note.transition")).all()
        return [e.detail for e in events if e.detail.get("note_id") == note_id and key in e.detail]


def _copies(world: SyncWorld, conn: str, ehr: Any, note: NoteRecord) -> int:
    """This draft's notes among the patient's (the server ignores the identifier search: filtered here)."""
    return sum(carries_identifier(doc, note) for doc in patient_notes(world, conn, ehr))


@pytest.mark.parametrize(
    ("others", "left"),
    [(1, ("unknown", "match_unconfirmed", 200)), (2, ("failed", "several_matches", 412))],
    ids=["match_unconfirmed", "several_matches"],
)
def test_dwb63_a_confirmed_retry_where_if_none_exist_ignores_the_identifier_writes_the_note_once(
    world, start_sandbox, http, request_log, api, others: int, left: tuple[str, str, int]
) -> None:
    """DWB-31: the condition matched the patient's other note(s): a plain retry sends If-None-Exist again and ends as
    before, nothing written; the person's confirmed retry sends the note once without it: one copy, ``written``,
    audited ``unconditional`` (no PHI), and the flag does not outlive that attempt."""
    ehr = start_sandbox(patients=4, seed=7, **IGNORES_IDENTIFIER)
    conn = _patient_with(world, ehr, http, (lambda n: n == 1) if others == 1 else (lambda n: n >= 2))
    before = len(patient_notes(world, conn, ehr))
    note = enqueue(world, conn)
    first = write_note(world.env, FAST, note.id)
    assert (first.state, first.reason_code, first.last_http_status) == left
    plain = api.retry(note.id)
    assert plain.status_code == 200, plain.text
    assert not read_note(world, note.id).send_unconditional
    again = write_note(world.env, FAST, note.id)
    assert (again.state, again.reason_code, again.last_http_status) == left
    assert len(patient_notes(world, conn, ehr)) == before
    confirmed = api.retry(note.id, {"confirmNotInEhr": True})
    assert confirmed.status_code == 200, confirmed.text
    assert read_note(world, note.id).send_unconditional
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.send_unconditional) == ("written", False)
    assert len(patient_notes(world, conn, ehr)) == before + 1 and _copies(world, conn, ehr, note) == 1
    assert write_note(world.env, FAST, note.id).state == "written"
    assert request_log.posts_conditional(DOC_POSTS) == [True, True, False]
    assert [d["unconditional"] for d in _details(world, note.id, "retry")] == [False, True]
    assert [d.get("unconditional", False) for d in _details(world, note.id, "doc_post")] == [False, False, True]
    assert "Follow-up" not in str(_details(world, note.id, "retry")) and note.patient_id not in str(done.reason)


def test_dwb63_a_search_reported_ignored_after_the_match_still_counts_as_the_evidence(
    world, start_sandbox, http, request_log, api
) -> None:
    """A server that says it ignored the identifier search: the match's ``match_unconfirmed`` is followed by the
    search's ``identifier_search_ignored``, which the note is left with. Its audit trail keeps the match, so the
    confirmed retry sends the note without If-None-Exist: written once."""
    ehr = start_sandbox(patients=4, seed=7, report_ignored_params="self_link", **IGNORES_IDENTIFIER)
    conn = _patient_with(world, ehr, http, lambda n: n == 1)
    note = enqueue(world, conn)
    left = write_note(world.env, FAST, note.id)
    assert (left.state, left.reason_code) == ("unknown", "identifier_search_ignored")
    assert api.retry(note.id).status_code == 409  # as before: ehrsync cannot look, the person must
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written" and _copies(world, conn, ehr, note) == 1
    assert request_log.posts_conditional(DOC_POSTS) == [True, False]


@pytest.mark.parametrize("copies", [1, 2])
def test_dwb63_a_wrongly_confirmed_retry_finds_the_note_by_its_identifier_and_never_posts_a_copy(
    world, start_sandbox, http, request_log, api, copies: int
) -> None:
    """DWB-31: the note is in the EHR (as after an earlier answer lost while the EHR's search had not indexed it
    yet) and the person, missing it in the chart, confirms it absent: a person's word is no proof, so the
    exact-identifier search made just before the unconditional POST finds it (the server ignores the parameter
    silently; only notes carrying the draft's identifier count): ``written`` with its id (``failed``
    ``duplicate_notes`` with two), nothing POSTed. Before, the POST without If-None-Exist filed one copy more."""
    ehr = start_sandbox(patients=4, seed=7, **IGNORES_IDENTIFIER)
    conn = _patient_with(world, ehr, http, lambda n: n == 1)
    note = enqueue(world, conn)
    assert write_note(world.env, FAST, note.id).reason_code == "match_unconfirmed"
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    stored = [client.create(build_payload(note, note.doc_status)).id for _ in range(copies)]
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == [] and _copies(world, conn, ehr, note) == copies
    if copies == 1:
        assert (done.state, done.ehr_resource_id, done.send_unconditional) == ("written", stored[0], False)
    else:
        assert (done.state, done.reason_code, done.send_unconditional) == ("failed", "duplicate_notes", False)


@pytest.mark.parametrize(
    ("report", "by_details", "ends"),
    [
        ("silent", True, ("written", None)),
        ("self_link", True, ("written", None)),
        ("self_link", False, ("unknown", "identifier_search_ignored")),
    ],
)
def test_dwb63_a_lost_answer_to_the_unconditional_post_is_never_resent_blind(
    world, start_sandbox, http, request_log, api, report: str, by_details: bool, ends: tuple[str, str | None]
) -> None:
    """The unconditional POST is stored and its answer lost: the note is searched for, never POSTed again. A search
    the server silently ignores still finds the draft's exact identifier (``written``); one it says it ignored is
    settled by the DWB-32 patient, type and date search where the server declares those parameters (``written``),
    and leaves it ``unknown`` for a person where it does not. Either way one copy, and the flag is gone: a further
    confirmed retry, with no new match in its evidence, sends If-None-Exist again (the EHR's condition matches:
    nothing created)."""
    params = {} if by_details else {"document_search_params": []}
    ehr = start_sandbox(patients=4, seed=7, report_ignored_params=report, **IGNORES_IDENTIFIER, **params)
    conn = _patient_with(world, ehr, http, lambda n: n == 1)
    note = enqueue(world, conn)
    assert write_note(world.env, FAST, note.id).state == "unknown"
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, the answer lost
    lost = write_note(world.env, FAST, note.id)
    assert ((lost.state, lost.reason_code), lost.send_unconditional) == (ends, False)
    assert write_note(world.env, FAST, note.id).state == ends[0]
    assert request_log.posts_conditional(DOC_POSTS) == [True, False]
    assert _copies(world, conn, ehr, note) == 1
    if lost.state != "unknown":
        return
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200  # the person missed it in the chart
    assert not read_note(world, note.id).send_unconditional
    after = write_note(world.env, FAST, note.id)
    assert (after.state, after.reason_code) == ("failed", "several_matches")
    assert request_log.posts_conditional(DOC_POSTS) == [True, False, True] and _copies(world, conn, ehr, note) == 1


@pytest.mark.parametrize(("crash_at", "stored"), [("writeback.posting", False), ("writeback.sent", True)])
def test_dwb63_a_run_killed_during_the_unconditional_post_is_resumed_by_a_search_never_a_post(
    tmp_path, start_sandbox, http, request_log, crash_at: str, stored: bool
) -> None:
    """The run sending the confirmed retry's unconditional POST is SIGKILLed once the POST is recorded (before it
    leaves, or after the EHR stored it): the resumed run cannot tell, and without If-None-Exist no resend is safe, so
    it searches (the draft's exact identifier: found, ``written``; not found, ``unknown``), never POSTs again."""
    ehr = start_sandbox(patients=4, seed=7, **IGNORES_IDENTIFIER)
    root = tmp_path / "world"
    world = make_environment(root, http=http)
    conn = _patient_with(world, ehr, http, lambda n: n == 1)
    note = enqueue(world, conn)
    assert write_note(world.env, FAST, note.id).reason_code == "match_unconfirmed"
    with notes_api(world, tmp_path / "app_state") as api:
        assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    killed = run_writeback_child(root, world, note.id, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = read_note(world, note.id)
    assert (left.state, left.doc_posted, left.send_unconditional) == ("sending", True, True)
    request_log.clear()  # what the resumed run sends (the killed child's requests are not logged here)
    resumed = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == []
    assert _copies(world, conn, ehr, note) == int(stored) and not resumed.send_unconditional
    assert (resumed.state, resumed.reason_code) == (("written", None) if stored else ("unknown", "response_lost"))


@pytest.mark.parametrize("copies", [1, 2])
def test_dwb32_63_a_wrongly_confirmed_retry_where_the_search_is_reported_ignored_finds_the_note_by_its_details(
    world, start_sandbox, http, request_log, api, copies: int
) -> None:
    """As the wrongly confirmed retry above, on a server that says it ignored the identifier search (its self link
    names no identifier): that search proves nothing, so the DWB-32 patient, type and date search, exact matches
    only, decides before the unconditional POST, as it does for a lost answer: ``written`` with the stored note's
    id (``failed`` ``duplicate_notes`` with two), nothing POSTed. Before, the POST filed one copy more."""
    ehr = start_sandbox(patients=4, seed=7, report_ignored_params="self_link", **IGNORES_IDENTIFIER)
    conn = _patient_with(world, ehr, http, lambda n: n == 1)
    note = enqueue(world, conn)
    assert write_note(world.env, FAST, note.id).reason_code == "identifier_search_ignored"
    client = FhirClient(ehr.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    stored = [client.create(build_payload(note, note.doc_status)).id for _ in range(copies)]
    assert api.retry(note.id, {"confirmNotInEhr": True}).status_code == 200
    assert read_note(world, note.id).send_unconditional
    request_log.clear()
    done = write_note(world.env, FAST, note.id)
    assert request_log.paths(DOC_POSTS, "POST") == [] and _copies(world, conn, ehr, note) == copies
    if copies == 1:
        assert (done.state, done.ehr_resource_id, done.send_unconditional) == ("written", stored[0], False)
    else:
        assert (done.state, done.reason_code, done.send_unconditional) == ("failed", "duplicate_notes", False)
