"""A tenant switch stored as neither ``true`` nor ``false`` (a row written before seeds were checked, or edited by
hand: ``"allowFinalNotes": "true"``, ``"yes"``, ``1``, ``null``), against the sandbox over a real socket and a real
SQLite app database.

Before, the engine read any such value as off: an approved final note was ``blocked`` (``final_not_allowed``) and a
note under ``"enableWrite": "true"`` ``blocked`` (``vendor_disabled``), as if the tenant had said no, with nothing
naming the setting. Now the note waits ``pending`` with ``tenant_setting_invalid``, the reason naming the setting and
the value's JSON type, and goes out once the setting is fixed; a value the note's answer does not hang on changes
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm.attributes import flag_modified

from engine.writeback import write_note
from engine.writeback.waiting import HOLD_MIN_S
from store.models import Tenant
from tests.engine.writeback_helpers import (
    FAST,
    ON,
    due_now,
    enqueue,
    held_s,
    server_notes,
    set_tenant,
    writable_connection,
)

DOC_POSTS = "/fhir/DocumentReference"
KINDS = [("true", "a string"), ("yes", "a string"), (1, "a number"), (None, "null"), ([True], "an array")]


def _store(world, practice: Any) -> None:
    """The tenant's ``practice_settings`` stored as given (as an older row or a hand edit left them)."""
    with world.env.db.session() as session:
        tenant = session.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.settings = {"practice_settings": practice}
        flag_modified(tenant, "settings")  # written even when equal to the row's (``1 == True`` in Python)
        session.commit()


def _held(world, note_id: str, setting: str, kind: str) -> None:
    """Held, put off ``HOLD_MIN_S`` at least although FAST's ``backoff_cap_s`` is 0 (before: due at once, a run, a
    version and an audit event on every sensor tick), put off again by a run once due; left due."""
    held = write_note(world.env, FAST, note_id)
    assert (held.state, held.reason_code, held.attempts) == ("pending", "tenant_setting_invalid", 0), held.reason
    assert f"practice_settings.{setting} must be true or false, got {kind}" in (held.reason or ""), held.reason
    assert held_s(held) >= HOLD_MIN_S and write_note(world.env, FAST, note_id).version == held.version
    due_now(world, note_id)
    again = write_note(world.env, FAST, note_id)  # a second run meeting it: put off again, nothing else
    assert (again.state, again.reason, again.attempts) == ("pending", held.reason, 0)
    assert again.version == held.version + 1 and again.next_attempt_at >= held.next_attempt_at
    due_now(world, note_id)


@pytest.mark.parametrize(("value", "kind"), KINDS)
def test_dwb03_an_approved_final_note_waits_for_an_unreadable_allow_final_notes(
    world, sb, http, request_log, value, kind
):
    conn = writable_connection(world, sb, http)
    _store(world, {"smartFhir": {**ON, "allowFinalNotes": value}})
    note = enqueue(world, conn, doc_status="final", clinician_approved=True)
    _held(world, note.id, "smartFhir.allowFinalNotes", kind)
    assert request_log.paths(DOC_POSTS, "POST") == []
    _store(world, {"smartFhir": {**ON, "allowFinalNotes": True}})  # fixed: the next run sends it as asked
    done = write_note(world.env, FAST, note.id)
    assert done.state == "written", done.reason
    assert server_notes(world, conn, sb, note)[0]["docStatus"] == "final"


@pytest.mark.parametrize("switch", ["enableWrite", "enableNoteCreate"])
def test_dwb43_a_note_waits_for_an_unreadable_write_switch_then_is_blocked_once_it_is_off(
    world, sb, http, request_log, switch: str
) -> None:
    conn = writable_connection(world, sb, http)
    others = {k: v for k, v in ON.items() if k != switch}
    _store(world, {"smartFhir": {**others, "allowFinalNotes": True}, "ehrIntegrations": {switch: "true"}})
    note = enqueue(world, conn)
    _held(world, note.id, f"ehrIntegrations.{switch}", "a string")
    set_tenant(world, **{switch: False})
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (vendor_disabled)")
    assert request_log.paths(DOC_POSTS, "POST") == []


def test_a_section_that_is_not_an_object_is_named(world, sb, http) -> None:
    conn = writable_connection(world, sb, http)
    _store(world, {"smartFhir": "on"})
    note = enqueue(world, conn)
    held = write_note(world.env, FAST, note.id)
    assert (held.state, held.reason_code) == ("pending", "tenant_setting_invalid")
    assert "practice_settings.smartFhir must be an object, got a string" in (held.reason or "")


@pytest.mark.parametrize(
    ("practice", "doc", "state"),
    [
        ({"smartFhir": {**ON, "allowFinalNotes": "yes"}}, "preliminary", "written"),  # a draft needs no opt-in
        ({"smartFhir": ON, "ehrIntegrations": {"enableWrite": "yes"}}, "preliminary", "written"),  # on in smartFhir
        ({"smartFhir": {"enableWrite": "yes", "enableNoteCreate": False}}, "preliminary", "blocked"),  # no, either way
        ({"smartFhir": {"enableWrite": True, "enableNoteCreate": True, "allowFinalNotes": 1}}, "final", "blocked"),
    ],
)
def test_a_value_the_answer_does_not_hang_on_holds_nothing(world, sb, http, practice, doc: str, state: str) -> None:
    """The last: a final note without its clinician's approval is blocked whatever ``allowFinalNotes`` says."""
    conn = writable_connection(world, sb, http)
    _store(world, practice)
    done = write_note(world.env, FAST, enqueue(world, conn, doc_status=doc).id)
    assert done.state == state, (done.reason_code, done.reason)


def test_with_the_service_switch_off_the_note_is_blocked_as_before(world, sb, http) -> None:
    from dataclasses import replace

    conn = writable_connection(world, sb, http)
    _store(world, {"smartFhir": {"enableWrite": "true", "enableNoteCreate": True}})
    done = write_note(world.env, replace(FAST, service_write_enabled=False), enqueue(world, conn).id)
    assert (done.state, done.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (vendor_disabled)")
