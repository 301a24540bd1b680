"""DWB-63 end to end: a note the EHR refused (``failed``) is retried by a person through the auth service's
``POST /api/ehr/notes/{id}/retry``, and the real ``note_outbox_sensor`` and ``write_back_note`` job (in-process)
write it to the sandbox as any pending note: no second path."""

from __future__ import annotations

from store.outbox import get_note
from tests.engine.retry_api import notes_api
from tests.engine.writeback_helpers import enqueue, server_notes, writable_connection
from tests.pipelines.outbox_runs import run_requested, tick_outbox

DOC_POSTS = "/fhir/DocumentReference"


def test_dwb63_a_failed_note_retried_by_a_person_is_written_by_the_sensors_run(
    world, sandbox, http, dagster_instance, tmp_path
) -> None:
    conn = writable_connection(world, sandbox, http)
    note = enqueue(world, conn)
    sandbox.admin.set_fault("422", path=DOC_POSTS, method="POST", times=None)
    first = tick_outbox(dagster_instance, world, None)
    [request] = first.run_requests or []
    assert run_requested(world, dagster_instance, request).success
    failed = get_note(world.env.db, note.id)
    assert failed is not None and failed.state == "failed"
    assert tick_outbox(dagster_instance, world, first.cursor).run_requests == []  # failed stays failed by itself
    sandbox.admin.clear_faults()
    with notes_api(world, tmp_path / "app_state") as api:
        assert api.retry(note.id, {"requestedBy": "pract-7"}).status_code == 200
        tick = tick_outbox(dagster_instance, world, first.cursor)
        [again] = tick.run_requests or []
        assert again.run_key == f"note:{note.id}:v{failed.version + 1}"
        assert run_requested(world, dagster_instance, again).success
        done = api.state(note.id)
    assert (done["state"], done["attempts"]) == ("written", 1)
    assert [d["id"] for d in server_notes(world, conn, sandbox, note)] == [done["ehrResourceId"]]
    assert tick_outbox(dagster_instance, world, tick.cursor).run_requests == []
