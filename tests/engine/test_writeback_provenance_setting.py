"""DWB-82: a note's Provenance and a tenant switch stored as neither ``true`` nor ``false`` (a row written before
seeds were checked, or edited by hand: ``"enableWrite": "true"``), against the sandbox over a real socket and a real
SQLite app database.

Before, the Provenance gate read such a value as "not allowed": an owed Provenance met by a later run was cleared for
good (``not_allowed``), and a note found by a search while the value was so was written owing none, though a
``pending`` note in the same tenant waits for the setting (``tenant_setting_invalid``). An operator's typo silently
dropped the Provenance of notes already in the chart. Now it stays owed: each run meeting the value gives its try
back, puts it off as a note waiting for the setting is, and logs and audits the setting's name; once the setting is
fixed, a run sends it. A value the Provenance does not hang on (``allowFinalNotes``: it gates the note, not the word
of where it came from) holds nothing. A tenant row whose settings are not JSON at all holds the note and its
Provenance alike (before: every run crashed on a bare ``JSONDecodeError``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import text

from engine.writeback import write_note
from engine.writeback.waiting import HOLD_MIN_S
from store.models import utcnow
from tests.engine.helpers import SyncWorld
from tests.engine.writeback_helpers import (
    FAST,
    WRITE_SCOPE,
    asked_for,
    enqueue,
    provenance_audits,
    provenance_due_now,
    set_tenant,
    writable_connection,
)

DOC_POSTS, PROV_POSTS = "/fhir/DocumentReference", "/fhir/Provenance"
PROV_SCOPE = f"{WRITE_SCOPE} patient/Provenance.c"
SAID = "practice_settings.smartFhir.enableWrite must be true or false, got a string"


def _owed_note(world: SyncWorld, start_sandbox: Any, http: Any, final: bool = False, **note: Any) -> tuple[Any, str]:
    """A note written whose Provenance POST never reached the EHR: owed (sandbox, note id)."""
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    set_tenant(world, allowFinalNotes=final)
    enqueued = enqueue(world, conn, author_id="pract-1", **note)
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, enqueued.id)
    assert (left.state, left.provenance_tries) == ("written", 0) and left.provenance_due_at is not None
    return ehr, enqueued.id


def test_dwb82_an_owed_provenance_waits_for_an_unreadable_write_switch_and_is_sent_once_fixed(
    world: SyncWorld, start_sandbox: Any, http: Any, request_log: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ehr, note_id = _owed_note(world, start_sandbox, http)
    set_tenant(world, enableWrite="true")  # the operator's typo: a string, neither on nor off
    caplog.set_level(logging.WARNING, logger="engine.writeback")
    for _ in range(FAST.max_attempts + 1):  # more runs than its tries: none spent, never given up
        provenance_due_now(world, note_id)
        assert asked_for(world, note_id)
        held = write_note(world.env, FAST, note_id)
        assert (held.state, held.provenance_id, held.provenance_tries) == ("written", None, 0)
        assert held.provenance_due_at is not None, held.provenance_outcome  # before: cleared, ``not_allowed``
        assert held.provenance_outcome is None
        assert (held.provenance_due_at - utcnow()).total_seconds() >= HOLD_MIN_S - 5  # put off, as the notes are
        assert not asked_for(world, note_id)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1  # the dropped one: nothing sent on a guess
    said = provenance_audits(world, "waiting_for_setting")
    assert len(said) == FAST.max_attempts + 1
    assert all(d["error_code"] == "tenant_setting_invalid" and d["problem"] == SAID for d in said)
    assert any(SAID in r.getMessage() for r in caplog.records)

    set_tenant(world)  # fixed
    provenance_due_now(world, note_id)
    done = write_note(world.env, FAST, note_id)
    [prov] = ehr.state.store.orphan_resources(["Provenance"])
    assert (done.provenance_id, done.provenance_due_at, done.provenance_outcome) == (prov["id"], None, "sent")
    assert done.provenance_tries == 1


def test_dwb82_a_provenance_waiting_for_the_setting_is_cleared_once_the_switch_is_off(
    world: SyncWorld, start_sandbox: Any, http: Any, request_log: Any
) -> None:
    """Fixed to ``false``: the tenant said no, so none is sent (``not_allowed``), as before for a switch off."""
    _ehr, note_id = _owed_note(world, start_sandbox, http)
    set_tenant(world, enableWrite="true")
    provenance_due_now(world, note_id)
    assert write_note(world.env, FAST, note_id).provenance_due_at is not None
    set_tenant(world, enableWrite=False)
    provenance_due_now(world, note_id)
    done = write_note(world.env, FAST, note_id)
    assert (done.provenance_due_at, done.provenance_outcome, done.provenance_id) == (None, "not_allowed", None)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1


def test_dwb03_82_an_unreadable_allow_final_notes_holds_no_provenance(
    world: SyncWorld, start_sandbox: Any, http: Any
) -> None:
    """``allowFinalNotes`` gates a final note, not its Provenance (a valid ``false`` sends it): a bad value of it
    changes nothing for the Provenance of a final note already written. Before: cleared ``not_allowed``."""
    ehr, note_id = _owed_note(world, start_sandbox, http, True, doc_status="final", clinician_approved=True)
    set_tenant(world, allowFinalNotes="yes")
    provenance_due_now(world, note_id)
    done = write_note(world.env, FAST, note_id)
    [prov] = ehr.state.store.orphan_resources(["Provenance"])
    assert (done.provenance_id, done.provenance_outcome) == (prov["id"], "sent")


def test_dwb32_82_a_note_found_while_a_switch_is_unreadable_owes_its_provenance(
    world: SyncWorld, start_sandbox: Any, http: Any, request_log: Any
) -> None:
    """The search needs no switch (it writes nothing), so the note is found and ``written``; its Provenance, a
    write, is owed until the setting is fixed. Before: written owing none (``not_allowed``), never sent."""
    ehr = start_sandbox(provenance_create=True, conditional_create=False)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    note = enqueue(world, conn, author_id="pract-1")
    ehr.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, its answer lost
    ehr.admin.set_fault("500", path=DOC_POSTS, method="GET", times=None)  # and its search failing: unknown
    assert write_note(world.env, FAST, note.id).state == "unknown"
    ehr.admin.clear_faults()
    set_tenant(world, enableWrite="true")
    found = write_note(world.env, FAST, note.id)
    assert (found.state, found.provenance_id) == ("written", None) and found.ehr_resource_id
    assert found.provenance_due_at is not None, found.provenance_outcome
    assert request_log.paths(PROV_POSTS, "POST") == []
    set_tenant(world)
    provenance_due_now(world, note.id)
    done = write_note(world.env, FAST, note.id)
    [prov] = ehr.state.store.orphan_resources(["Provenance"])
    assert (done.provenance_id, done.provenance_outcome) == (prov["id"], "sent")


def _not_json(world: SyncWorld) -> None:
    """The tenant's row as a hand edit of an SQLite app database leaves it: settings that do not parse as JSON."""
    with world.env.db.engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET settings = '{enableWrite: true' WHERE id = :t"), {"t": world.tenant_id})


def test_dwb82_a_tenant_row_whose_settings_are_not_json_holds_the_note_and_its_provenance(
    world: SyncWorld, start_sandbox: Any, http: Any, request_log: Any
) -> None:
    """Before, loading the tenant's row raised a bare ``JSONDecodeError``: each run crashed, a note stayed due (asked
    for on every tick) and each run of an owed Provenance spent the try it had claimed, until it was given up for
    good. Now both wait, as for a switch neither true nor false, the reason naming the row."""
    ehr, note_id = _owed_note(world, start_sandbox, http)
    conn = writable_connection(world, ehr, http, scope=PROV_SCOPE)
    pending = enqueue(world, conn, author_id="pract-1")
    _not_json(world)
    held = write_note(world.env, FAST, pending.id)
    assert (held.state, held.reason_code, held.attempts) == ("pending", "tenant_setting_invalid", 0), held.reason
    assert "stored settings are not JSON" in (held.reason or "")
    for _ in range(FAST.max_attempts + 1):
        provenance_due_now(world, note_id)
        owed = write_note(world.env, FAST, note_id)
        assert (owed.provenance_due_at is not None, owed.provenance_tries) == (True, 0), owed.provenance_outcome
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1 and request_log.paths(DOC_POSTS, "POST") != []


@pytest.mark.parametrize("stored", ["[]", "false", "0"])
def test_dwb82_a_tenant_row_whose_settings_are_json_but_no_object_holds_the_note_and_its_provenance(
    world: SyncWorld, start_sandbox: Any, http: Any, request_log: Any, stored: str
) -> None:
    """Settings that parse but are no object (a hand edit): ``settings must be an object``, as ``[1]`` or ``true``
    already were. Before, a falsy one (``[]``, ``false``, ``0``) was read as ``{}``, every switch off as if the tenant
    had said no: the owed Provenance cleared ``not_allowed`` for good and the note ``blocked``."""
    _ehr, note_id = _owed_note(world, start_sandbox, http)
    pending = enqueue(world, writable_connection(world, _ehr, http, scope=PROV_SCOPE), author_id="pract-1")
    with world.env.db.engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET settings = :s WHERE id = :t"), {"s": stored, "t": world.tenant_id})
    held = write_note(world.env, FAST, pending.id)
    assert (held.state, held.reason_code) == ("pending", "tenant_setting_invalid"), held.reason
    assert "settings must be an object" in (held.reason or "")
    provenance_due_now(world, note_id)
    owed = write_note(world.env, FAST, note_id)
    assert (owed.provenance_due_at is not None, owed.provenance_tries) == (True, 0), owed.provenance_outcome
    [said] = provenance_audits(world, "waiting_for_setting")
    assert said["problem"].startswith("settings must be an object, got ")
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1
