"""DWB-82 in Dagster: a ``written`` note whose Provenance POST never reached the EHR is asked for by the real
``note_outbox_sensor`` once its Provenance is due, and the real ``write_back_note`` run sends exactly one; the
sensor then asks for nothing more. Before, such a note was never asked for again: no Provenance, ever."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from store.models import NoteOutbox, utcnow
from store.outbox import get_note
from tests.engine.writeback_helpers import WRITE_SCOPE, enqueue, writable_connection
from tests.pipelines.outbox_runs import run_requested, tick_outbox

PROV_POSTS = "/fhir/Provenance"


def test_dwb82_the_sensor_asks_for_an_owed_provenance_once_due_and_its_run_sends_exactly_one(
    world, sandbox, http, dagster_instance
) -> None:
    sandbox.admin.settings(provenance_create=True)
    conn = writable_connection(world, sandbox, http, scope=f"{WRITE_SCOPE} patient/Provenance.c")
    note = enqueue(world, conn, author_id="pract-1")
    sandbox.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    [request] = tick_outbox(dagster_instance, world).run_requests or []
    assert run_requested(world, dagster_instance, request).success
    left = get_note(world.env.db, note.id)
    assert left is not None and left.state == "written" and left.provenance_id is None
    assert tick_outbox(dagster_instance, world).run_requests == []  # owed, not due yet

    with world.env.db.session() as session:  # ``stalled_after_s`` has passed
        due = utcnow() - timedelta(seconds=1)
        session.execute(update(NoteOutbox).where(NoteOutbox.id == note.id).values(provenance_due_at=due))
        session.commit()
    [request] = tick_outbox(dagster_instance, world).run_requests or []
    assert run_requested(world, dagster_instance, request).success

    done = get_note(world.env.db, note.id)
    assert done is not None and done.provenance_id and done.provenance_due_at is None
    mine = [
        p
        for p in sandbox.state.store.orphan_resources(["Provenance"])
        if p["target"][0]["reference"].startswith(f"DocumentReference/{done.ehr_resource_id}")
    ]
    assert [p["id"] for p in mine] == [done.provenance_id]
    assert tick_outbox(dagster_instance, world).run_requests == []
