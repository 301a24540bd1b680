"""DWB-82: ``GET /api/ehr/notes/{id}`` says where a written note's Provenance stands (``ehrProvenance``), through the
auth service's real app over a write-back world's database, the notes written by the real engine against the sandbox
over a socket.

Before, the answer showed ``provenance.ehrProvenanceId`` only: null alike for a Provenance owed and due again soon,
one given up after its tries, one the gates never allowed and one the EHR refused for good, so an operator could
not tell them apart. Now ``ehrProvenance`` names its ``status``, ``id``, ``tries`` and ``nextTryAt``: ids, counts
and times, never the note's text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update

from engine.writeback import write_note
from store.models import NoteOutbox
from tests.engine.helpers import SyncWorld
from tests.engine.retry_api import notes_api
from tests.engine.writeback_helpers import (
    FAST,
    NOTE_TEXT,
    WRITE_SCOPE,
    enqueue,
    provenance_due_now,
    provenance_said,
    read_note,
    writable_connection,
)

PROV_POSTS = "/fhir/Provenance"
PROV_SCOPE = f"{WRITE_SCOPE} patient/Provenance.c"


def _written(world: SyncWorld, start_sandbox: Any, http: Any, *, fault: str | None, **sandbox: Any) -> str:
    """A note written by the engine (its Provenance POST met ``fault`` every time, when given)."""
    ehr = start_sandbox(**{"provenance_create": True, **sandbox})
    note = enqueue(world, writable_connection(world, ehr, http, scope=PROV_SCOPE), author_id="pract-1")
    if fault is not None:
        ehr.admin.set_fault(fault, path=PROV_POSTS, method="POST", times=None)
    assert write_note(world.env, FAST, note.id).state == "written"
    return note.id


def test_dwb82_an_owed_provenance_shows_its_tries_and_next_time_then_its_id_once_sent(
    world: SyncWorld, start_sandbox: Any, http: Any, tmp_path: Any
) -> None:
    ehr = start_sandbox(provenance_create=True)
    note = enqueue(world, writable_connection(world, ehr, http, scope=PROV_SCOPE), author_id="pract-1")
    ehr.admin.set_fault("500", path=PROV_POSTS, method="POST", times=2)  # the writing run's and one later run's
    with notes_api(world, tmp_path / "app_state") as api:
        assert api.state(note.id)["ehrProvenance"] == {
            "status": "not_written",
            "id": None,
            "tries": 0,
            "nextTryAt": None,
        }
        write_note(world.env, FAST, note.id)
        owed = api.state(note.id)
        due = read_note(world, note.id).provenance_due_at
        assert due is not None and owed["state"] == "written"
        assert owed["ehrProvenance"] == {"status": "owed", "id": None, "tries": 0, "nextTryAt": due.isoformat()}
        provenance_due_now(world, note.id)
        write_note(world.env, FAST, note.id)  # a later run: its try fails too
        again = api.state(note.id)["ehrProvenance"]
        assert (again["status"], again["tries"]) == ("owed", 1)
        assert datetime.fromisoformat(again["nextTryAt"]) == read_note(world, note.id).provenance_due_at
        provenance_due_now(world, note.id)
        sent = write_note(world.env, FAST, note.id)
        answer = api.client.get(f"/api/ehr/notes/{note.id}", headers={"X-API-Key": api.key})
    assert sent.provenance_id
    assert answer.json()["ehrProvenance"] == {"status": "sent", "id": sent.provenance_id, "tries": 2, "nextTryAt": None}
    assert provenance_said(world, note.id) == ["owed", "sent"]  # the audit says what the API says
    provenance_due_now(world, note.id)  # owed again with its id stored: nothing is sent, and it reads sent
    assert write_note(world.env, FAST, note.id).provenance_id == sent.provenance_id
    assert provenance_said(world, note.id) == ["owed", "sent", "sent"]  # before: audited "not_sent", recorded "sent"
    assert NOTE_TEXT not in answer.text


def test_dwb82_a_provenance_given_up_after_its_tries_is_told_from_one_never_allowed_or_refused(
    world: SyncWorld, start_sandbox: Any, http: Any, tmp_path: Any
) -> None:
    given_up = _written(world, start_sandbox, http, fault="500")
    for _ in range(FAST.max_attempts + 1):
        provenance_due_now(world, given_up)
        write_note(world.env, FAST, given_up)
    refused = _written(world, start_sandbox, http, fault="422")
    not_offered = _written(world, start_sandbox, http, fault=None, provenance_create=False)
    with notes_api(world, tmp_path / "app_state") as api:
        states = {
            name: api.state(n)["ehrProvenance"] for name, n in [("a", given_up), ("b", refused), ("c", not_offered)]
        }
    assert states["a"] == {"status": "given_up", "id": None, "tries": FAST.max_attempts, "nextTryAt": None}
    assert states["b"] == {"status": "refused", "id": None, "tries": 0, "nextTryAt": None}
    assert states["c"] == {"status": "not_allowed", "id": None, "tries": 0, "nextTryAt": None}
    # the audit says what the API says, from the commit that wrote the note (before, that commit said nothing of the
    # Provenance, one cleared as not allowed was audited "not_sent", and one given up "gave_up")
    audited = {name: provenance_said(world, n) for name, n in [("a", given_up), ("b", refused), ("c", not_offered)]}
    assert audited == {"a": ["owed", "given_up"], "b": ["owed", "refused"], "c": ["not_allowed"]}


def test_dwb82_a_note_written_before_revision_0022_reads_unrecorded(
    world: SyncWorld, start_sandbox: Any, http: Any, tmp_path: Any
) -> None:
    """No Provenance id and none owed, with no outcome recorded (as every such note written before 0022): ehrsync
    does not say why, rather than guess."""
    note_id = _written(world, start_sandbox, http, fault="422")
    with world.env.db.session() as session:
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note_id).values(provenance_outcome=None))
        session.commit()
    with notes_api(world, tmp_path / "app_state") as api:
        assert api.state(note_id)["ehrProvenance"]["status"] == "unrecorded"


def test_dwb50_82_a_lost_note_found_under_an_id_that_is_no_fhir_id_reads_not_sent(
    world: SyncWorld, start_sandbox: Any, http: Any, tmp_path: Any
) -> None:
    """Written by the identifier search of its lost answer, the EHR naming it by a 70-character id (no FHIR id): no
    Provenance can point at it, so ``not_sent``. Before, that commit recorded no outcome and a note written today
    read ``unrecorded``, which says written before revision 0022."""
    ehr = start_sandbox(provenance_create=True, conditional_create=False, created_id_prefix="L" * 62)
    note = enqueue(world, writable_connection(world, ehr, http, scope=PROV_SCOPE), author_id="pract-1")
    ehr.admin.set_fault("drop_response", path="/fhir/DocumentReference", times=1)  # stored, answer lost: found
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.ehr_resource_id, done.reason_code) == ("written", None, "id_unknown"), done.reason
    with notes_api(world, tmp_path / "app_state") as api:
        assert api.state(note.id)["ehrProvenance"] == {"status": "not_sent", "id": None, "tries": 0, "nextTryAt": None}
    assert provenance_said(world, note.id) == ["not_sent"]
