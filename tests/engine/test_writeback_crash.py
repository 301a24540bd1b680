"""A write-back process SIGKILLed at each state transition, then resumed, leaves exactly one note on the EHR.

The child (``tests.engine.writeback_driver``) is a real process running ``engine.writeback.write_note``; the
crash points (engine/checkpoints.py) sit right after each committed transition and right after the EHR answered.
"""

from __future__ import annotations

import signal

import pytest

from engine.writeback import write_note
from store.outbox import get_note
from tests.engine.helpers import make_environment
from tests.engine.writeback_helpers import FAST, enqueue, run_writeback_child, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


@pytest.mark.parametrize(
    ("crash_at", "conditional", "fault", "left_in"),
    [
        ("writeback.sending", True, None, "sending"),  # committed sending, POST not made
        ("writeback.sending", False, None, "sending"),  # ... without conditional create: never POSTed, so sent once
        ("writeback.posting", True, None, "sending"),  # the POST recorded, not made: repeated with If-None-Exist
        ("writeback.sent", True, None, "sending"),  # the EHR stored it and answered; written not committed
        ("writeback.written", True, None, "written"),  # everything committed
        ("writeback.sent", False, None, "sending"),  # stored, no conditional create: resumed by search, not resent
        ("writeback.unknown", False, "drop_response", "unknown"),  # answer lost, no conditional create
        ("writeback.pending", True, "429", "pending"),  # throttled: back to pending, then killed
    ],
)
def test_kill_at_each_transition_then_resume_gives_exactly_one_note(
    tmp_path, start_sandbox, http, crash_at, conditional, fault, left_in
) -> None:
    """DWB-34 and draft-note §6: every transition is committed before the call it guards, so resuming is safe."""
    ehr = start_sandbox(conditional_create=conditional)
    root = tmp_path / "world"
    world = make_environment(root, http=http)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    if fault == "429":
        ehr.admin.set_fault("429", path=DOC_POSTS, times=None, retry_after="0")
    elif fault:
        ehr.admin.set_fault(fault, path=DOC_POSTS, times=1)
    killed = run_writeback_child(root, world, note.id, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ehr.admin.clear_faults()
    stored = get_note(world.env.db, note.id)
    assert stored is not None and stored.state == left_in
    resumed = write_note(world.env, FAST, note.id)
    assert resumed.state == "written", resumed.reason
    [doc] = server_notes(world, conn, ehr, note)
    assert doc["id"] == resumed.ehr_resource_id


def test_killed_after_sending_without_conditional_create_is_never_resent(tmp_path, start_sandbox, http) -> None:
    """DWB-32: killed once its POST was recorded (``doc_posted``), before it left, on a server without If-None-Exist:
    the resumed run cannot tell it from a POST whose answer was lost, so it only searches (nothing found: unknown, for
    a person) and never POSTs a possible duplicate. Killed before that record it was never POSTed: sent once (above)."""
    ehr = start_sandbox(conditional_create=False)
    root = tmp_path / "world"
    world = make_environment(root, http=http)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    killed = run_writeback_child(root, world, note.id, "writeback.posting")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = write_note(world.env, FAST, note.id)
    assert resumed.state == "unknown" and server_notes(world, conn, ehr, note) == []
