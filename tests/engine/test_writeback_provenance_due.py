"""DWB-82: a Provenance owed survives the run that owed it, against the sandbox over a socket, on SQLite and PostgreSQL.

Before, a run that recorded a note ``written`` and then died (SIGKILL) before its Provenance POST, or whose POST
never reached the EHR, left the note with no Provenance and nothing saying one was owed: no later run sent it. Now
the ``written`` commit records it owed (``provenance_due_at``), and once due the note sensor asks for a run that
sends it, exactly once: a Provenance the EHR already holds (its answer lost) is found by ``Provenance?target=``
where the statement declares that search, and not sent again.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from sqlalchemy import update

from engine.writeback import write_note
from engine.writeback.queue import due_runs
from sandbox import SandboxServer
from store.models import Connection, utcnow
from store.outbox import NoteRecord
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, make_environment
from tests.engine.writeback_helpers import (
    FAST,
    WRITE_SCOPE,
    asked_for,
    enqueue,
    provenance_due_now,
    read_note,
    run_writeback_child,
    set_tenant,
    writable_connection,
)

PROV_POSTS = "/fhir/Provenance"
PROV_SCOPE = f"{WRITE_SCOPE} patient/Provenance.c"
#: Provenance search too: the later run may look for a Provenance whose answer was lost
SEARCH_SCOPE = f"{WRITE_SCOPE} patient/Provenance.cs"


@pytest.fixture(params=["sqlite", "postgres"])
def db_world(request: pytest.FixtureRequest, tmp_path: Any, http: Any) -> tuple[SyncWorld, str | None]:
    """A world on each app database (its URL for a child process; None: the SQLite file under its root)."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return make_environment(tmp_path / "world", http=http, app_db_url=url), url


def _connected(world: SyncWorld, start_sandbox: Any, http: Any, scope: str = PROV_SCOPE, **settings: Any) -> Any:
    ehr = start_sandbox(provenance_create=True, **settings)
    conn = writable_connection(world, ehr, http, scope=scope)
    return ehr, conn, enqueue(world, conn, author_id="pract-1")


def _stored(ehr: SandboxServer, doc_id: str | None) -> list[dict[str, Any]]:
    """The Provenances the EHR holds pointing at ``doc_id``."""
    found = ehr.state.store.orphan_resources(["Provenance"])
    return [p for p in found if p["target"][0]["reference"].startswith(f"DocumentReference/{doc_id}")]


def _later_run(world: SyncWorld, note_id: str) -> NoteRecord:
    """What the note sensor asks for now, run for ``note_id`` (it must be asked for)."""
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=FAST.stalled_after_s)
    [run] = [r for r in runs if r.note_id == note_id]
    return write_note(world.env, FAST, run.note_id, run.version)


@pytest.mark.parametrize("crash_at", ["writeback.written", "writeback.provenance"])
def test_dwb82_a_run_killed_between_written_and_its_provenance_owes_it_and_a_later_run_sends_exactly_one(
    db_world, start_sandbox, http, tmp_path, crash_at
) -> None:
    """SIGKILLed right after ``sending -> written`` committed, or as the run's last move is committed and its
    Provenance is about to be sent (the point every way to ``written`` passes)."""
    world, url = db_world
    ehr, _, note = _connected(world, start_sandbox, http)
    killed = run_writeback_child(tmp_path / "world", world, note.id, crash_at, app_db_url=url)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = read_note(world, note.id)
    assert (left.state, left.provenance_id) == ("written", None) and left.provenance_due_at is not None
    assert _stored(ehr, left.ehr_resource_id) == []
    assert not asked_for(world, note.id)  # not before it is due: the writing run may still be sending it

    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)

    [prov] = _stored(ehr, done.ehr_resource_id)
    assert (done.state, done.provenance_id, done.provenance_due_at) == ("written", prov["id"], None)
    assert prov["agent"][-1]["who"] == {"reference": "Practitioner/pract-1"}
    assert not asked_for(world, note.id)
    assert write_note(world.env, FAST, note.id).provenance_id == prov["id"]
    assert len(_stored(ehr, done.ehr_resource_id)) == 1


def test_dwb82_a_provenance_post_whose_connection_dropped_is_sent_by_a_later_run(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """The EHR never got the POST (the connection dropped before it was read): owed, sent once by a later run."""
    ehr, _, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)
    assert (left.state, left.provenance_id) == ("written", None) and left.provenance_due_at is not None
    assert _stored(ehr, left.ehr_resource_id) == []

    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    [prov] = _stored(ehr, done.ehr_resource_id)
    assert (done.provenance_id, done.provenance_due_at, done.provenance_tries) == (prov["id"], None, 1)


def test_dwb82_a_stored_provenance_whose_answer_was_lost_is_found_by_target_and_not_sent_again(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """The EHR stored it and the answer was lost: the statement declares ``Provenance?target=``, so the later run
    finds ehrsync's own there and stores its id; no second POST."""
    ehr, _, note = _connected(world, start_sandbox, http, scope=SEARCH_SCOPE, provenance_search=True)
    ehr.admin.set_fault("drop_response", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)
    [prov] = _stored(ehr, left.ehr_resource_id)
    assert left.provenance_id is None and left.provenance_due_at is not None

    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    assert (done.provenance_id, done.provenance_due_at) == (prov["id"], None)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1 and len(request_log.paths(PROV_POSTS, "GET")) == 1
    assert len(_stored(ehr, done.ehr_resource_id)) == 1


def test_dwb82_without_the_target_search_a_lost_answer_is_sent_again_as_documented(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    """No ``Provenance?target=`` declared: ehrsync cannot tell a stored one from none, and POSTs it (docs/WRITEBACK.md:
    a second identical Provenance over a missing one)."""
    ehr, _, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("drop_response", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)
    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    assert done.provenance_id and done.provenance_due_at is None
    assert request_log.paths(PROV_POSTS, "GET") == [] and len(_stored(ehr, left.ehr_resource_id)) == 2


def test_dwb82_a_provenance_refused_for_good_is_not_owed(world, start_sandbox, http, request_log: RequestLog) -> None:
    """A 422 (a 4xx other than 408/429) would be refused again: logged, no longer owed, never asked for."""
    ehr, _, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("422", path=PROV_POSTS, method="POST", times=1)
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.provenance_id, done.provenance_due_at) == ("written", None, None)
    assert not asked_for(world, note.id) and len(request_log.paths(PROV_POSTS, "POST")) == 1


def test_dwb82_an_owed_provenance_is_cleared_unsent_once_the_tenant_switched_write_off(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    ehr, _, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("500", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)
    assert left.provenance_due_at is not None
    set_tenant(world, enableWrite=False)
    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    assert (done.provenance_id, done.provenance_due_at) == (None, None)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1 and not asked_for(world, note.id)


def test_dwb82_an_owed_provenance_is_tried_at_most_max_attempts_runs_then_given_up(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    ehr, _, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("500", path=PROV_POSTS, method="POST", times=None)
    write_note(world.env, FAST, note.id)
    for tries in range(1, FAST.max_attempts + 1):
        provenance_due_now(world, note.id)
        assert _later_run(world, note.id).provenance_tries == tries
    provenance_due_now(world, note.id)
    done = _later_run(world, note.id)
    assert (done.provenance_id, done.provenance_due_at) == (None, None) and not asked_for(world, note.id)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1 + FAST.max_attempts


def test_dwb82_an_owed_provenance_of_a_connection_that_cannot_write_is_not_asked_for(
    world, start_sandbox, http, request_log: RequestLog
) -> None:
    ehr, conn, note = _connected(world, start_sandbox, http)
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    write_note(world.env, FAST, note.id)
    provenance_due_now(world, note.id)
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == conn).values(status="needs_reauth"))
        session.commit()
    assert not asked_for(world, note.id) and read_note(world, note.id).provenance_due_at is not None
    # a run asked for before the connection changed sends nothing and keeps it owed, for when it is active again
    held = write_note(world.env, FAST, note.id)
    assert held.provenance_due_at is not None and held.provenance_id is None
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1
