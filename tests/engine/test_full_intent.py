"""A full resync's intent outlives a failure (issue: a failed full resync was retried as an incremental one).

A full run that fails part-way (a type the EHR keeps failing, a run that fails before its steps began) used to
leave the unfinished types at their old marks: the retry, incremental like every scheduled run, searched only
after them, and what the full resync was asked to re-pull never came. The intent is now kept per type, as the
absent mark (``cursors.begin_full``), until a search of the whole type is upserted. Against the sandbox, over
real sockets, through production's Dagster job.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine import cursors, incremental, runs
from engine.run_outcome import record_unstarted_failure
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import run_sync, sync_type

TYPES = ["Observation", "Condition"]
OLD_MARK = datetime(2030, 1, 1, tzinfo=UTC)  # later than every sandbox record: an incremental search finds nothing


def _mark(world: SyncWorld, conn: str, rtype: str) -> datetime | None:
    return cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, rtype)


def _set_marks(world: SyncWorld, conn: str, mark: datetime) -> None:
    with world.env.db.locked_session() as session:
        for rtype in TYPES:
            cursors.advance(session, conn, cursors.REST_STREAM, rtype, "earlier-run", mark)
        session.commit()


def test_a_failed_full_resync_is_retried_in_full_type_by_type(start_sandbox, world, http) -> None:
    """BDX-28: the full resync fails on Observation (the EHR answers 500 to every search); Condition completes.
    The retry (an incremental run, as the scheduler asks for) searches Observation in full, not after the old
    mark, and Condition after the mark the full run stored; the run after that is incremental again."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    first = run_sync(world, conn, types=TYPES)
    assert first.status == "completed", first.error
    everything = first.types["Observation"].fetched
    assert everything > 0
    _set_marks(world, conn, OLD_MARK)  # a mark past the data it skipped: only a full search finds it again

    add_fault(http, sb, "500", path="/fhir/Observation", times=None)
    failed = run_sync(world, conn, types=TYPES, full=True)
    assert failed.status == "failed" and set(failed.failed_types) == {"Observation"}, failed.failed_types
    assert failed.types["Condition"].fetched == first.types["Condition"].fetched  # Condition's full search done
    assert _mark(world, conn, "Observation") is None  # the intent, kept: no mark to search after
    condition_mark = _mark(world, conn, "Condition")
    assert condition_mark is not None and condition_mark < OLD_MARK

    http.delete(f"{sb.base_url}/admin/faults").raise_for_status()
    retry = run_sync(world, conn, types=TYPES)  # incremental, as the scheduler's retry is
    assert retry.status == "completed", retry.error
    assert retry.types["Observation"].fetched == everything  # the full re-pull, not nothing after OLD_MARK
    assert retry.types["Condition"].fetched == 0  # after the full run's own mark: nothing changed since
    assert _mark(world, conn, "Observation") is not None

    after = run_sync(world, conn, types=TYPES)
    assert after.status == "completed" and after.types["Observation"].fetched == 0  # the intent was spent


def test_a_full_run_that_failed_before_any_step_keeps_its_intent(start_sandbox, world, http) -> None:
    """A full run that failed before a step reached the engine (its row queued by the sync API, or none at all):
    the run-status sensor's ``record_unstarted_failure`` forgets the marks, so the retry searches in full."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    db = world.env.db
    for queued_by_api in (False, True):
        _set_marks(world, conn, OLD_MARK)
        run_id = f"full-run-{queued_by_api}"
        if queued_by_api:
            runs.create_run(db, conn, "full", run_id=run_id)
        wrote = record_unstarted_failure(db, run_id, conn, full=True, error="step failed: connection_busy")
        assert all(_mark(world, conn, t) is None for t in TYPES), queued_by_api
        assert wrote is not queued_by_api  # a queued row is the run-end sensor's to close (finish_sync_run)
    _set_marks(world, conn, OLD_MARK)
    record_unstarted_failure(db, "incremental-run", conn, full=False, error="failed")
    assert _mark(world, conn, "Observation") == OLD_MARK  # an incremental run's failure forgets nothing


def test_the_intent_is_recorded_once_per_run_and_not_again_by_a_re_execution(world, start_sandbox, http) -> None:
    """Each later step of the same full run, and a Dagster re-execution of it, leave the marks its completed
    types stored: they were searched in full already."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    db = world.env.db
    _set_marks(world, conn, OLD_MARK)
    assert cursors.begin_full(db, conn, "full-1", TYPES)
    assert _mark(world, conn, "Condition") is None
    _set_marks(world, conn, OLD_MARK)  # as Condition's upsert in that run stores a mark
    assert not cursors.begin_full(db, conn, "full-1", TYPES)
    assert not cursors.begin_full(db, conn, "re-execution", TYPES, earlier_runs=("full-1",))
    assert _mark(world, conn, "Condition") == OLD_MARK
    assert cursors.begin_full(db, conn, "full-2", TYPES)  # a new full run forgets them again
    assert _mark(world, conn, "Condition") is None


def test_a_search_in_flight_when_the_intent_is_recorded_does_not_store_its_mark(
    start_sandbox, world, http, monkeypatch
) -> None:
    """The run-status sensor records a failed full run's intent (``record_unstarted_failure`` → ``begin_full``)
    outside the connection's lock, typically while the run that made it fail ``connection_busy`` (a batch) is
    syncing the connection. That run's type in flight had read its old mark before the marks were forgotten: its
    landing stored a new mark after its incremental search, and the full re-pull of that type never happened."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert sync_type(world, conn, "Observation").fetched > 0
    _set_marks(world, conn, OLD_MARK)
    searching = incremental._land_with_restarts

    def sensor_meanwhile(env, search):  # the sensor's write lands while this landing searches after OLD_MARK
        record_unstarted_failure(world.env.db, "full-run-busy", conn, full=True, error="connection_busy")
        return searching(env, search)

    monkeypatch.setattr(incremental, "_land_with_restarts", sensor_meanwhile)
    assert sync_type(world, conn, "Observation").error is None
    assert _mark(world, conn, "Observation") is None  # still forgotten: the next run searches it in full
    monkeypatch.undo()
    assert sync_type(world, conn, "Observation").fetched > 0
