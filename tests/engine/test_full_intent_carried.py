"""What a full resync owes is carried exactly: to the types it was asked for, and into its retry (BDX-28).

A full run limited to some types used to forget every type's mark (the others were pulled in full again by the
next run); the retry that finished a failed full run's types in full was recorded ``incremental``; and that retry
read only the references not yet stored, where the full run re-reads every one. Against the sandbox, over real
sockets, through production's Dagster job.
"""

from __future__ import annotations

import httpx

from engine.run_outcome import record_unstarted_failure
from sandbox import SandboxServer
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import SyncRun, run_sync
from tests.engine.test_full_intent import OLD_MARK, TYPES, _mark, _set_marks


def _failed_full_resync(world: SyncWorld, sb: SandboxServer, http: httpx.Client, failing: str) -> tuple[str, SyncRun]:
    """A first sync of ``TYPES``, then a full resync of them while the EHR answers 500 to every ``failing`` request:
    the connection and the first run."""
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    first = run_sync(world, conn, types=TYPES)
    assert first.status == "completed" and first.types["Practitioner"].fetched > 0, first.error
    add_fault(http, sb, "500", path=f"/fhir/{failing}", times=None)
    failed = run_sync(world, conn, types=TYPES, full=True)
    assert failed.status == "failed" and set(failed.failed_types) == {failing}, failed.failed_types
    sb.admin.clear_faults()
    return conn, first


def test_bdx28_a_full_run_limited_to_some_types_forgets_only_their_marks(start_sandbox, world, http) -> None:
    """A full resync of Observation alone leaves Condition's mark: the next run of both searches Condition after
    it (nothing new), not in full again."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    assert run_sync(world, conn, types=TYPES).status == "completed"
    _set_marks(world, conn, OLD_MARK)
    full = run_sync(world, conn, types=["Observation"], full=True)
    assert full.status == "completed", full.error
    assert full.types["Observation"].fetched > 0
    assert _mark(world, conn, "Condition") == OLD_MARK  # not asked for: its mark kept
    after = run_sync(world, conn, types=TYPES)
    assert after.status == "completed", after.error
    assert after.types["Condition"].fetched == 0 and after.types["Observation"].fetched == 0
    assert after.record is not None and after.record.kind == "incremental"


def test_bdx28_the_retry_that_finishes_a_full_resync_is_recorded_full_and_rereads_references(
    start_sandbox, world, http, request_log
) -> None:
    """The full resync fails on Observation; its retry (an incremental run, as the scheduler asks for) searches
    Observation in full: its row says ``full``, and it re-reads the references stored already, as the full run
    would have. The run after that is ``incremental`` again and reads none."""
    conn, first = _failed_full_resync(world, start_sandbox(patients=1), http, "Observation")

    request_log.clear()
    retry = run_sync(world, conn, types=TYPES)
    assert retry.status == "completed", retry.error
    assert retry.types["Observation"].fetched == first.types["Observation"].fetched  # searched in full
    assert retry.record is not None and retry.record.kind == "full"
    assert request_log.paths("/fhir/Practitioner"), "the stored references were not re-read"

    request_log.clear()
    after = run_sync(world, conn, types=TYPES)
    assert after.status == "completed" and after.record is not None and after.record.kind == "incremental"
    assert not request_log.paths("/fhir/Practitioner")


def test_bdx28_a_full_resync_whose_reference_step_failed_has_its_retry_reread_them(
    start_sandbox, world, http, request_log
) -> None:
    """Every clinical type of the full resync completes, its reference step fails (the EHR answers 500 to every
    Practitioner request): the retry re-reads the Practitioners still queued although they are stored already."""
    conn, first = _failed_full_resync(world, start_sandbox(patients=1), http, "Practitioner")

    request_log.clear()
    retry = run_sync(world, conn, types=TYPES)
    assert retry.status == "completed", retry.error
    reread = retry.types.get("Practitioner")
    assert reread is not None and reread.fetched == first.types["Practitioner"].fetched, "not re-read"
    request_log.clear()
    after = run_sync(world, conn, types=TYPES)
    assert after.status == "completed" and not request_log.paths("/fhir/Practitioner")


def test_bdx28_a_limited_full_run_that_failed_before_any_step_forgets_only_its_types(
    start_sandbox, world, http
) -> None:
    """The run-status sensor records a full run's intent when it failed before its steps: only its types'."""
    sb = start_sandbox(patients=1)
    conn = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    _set_marks(world, conn, OLD_MARK)
    record_unstarted_failure(world.env.db, "full-run", conn, full=True, error="failed", full_types=["Observation"])
    assert _mark(world, conn, "Observation") is None
    assert _mark(world, conn, "Condition") == OLD_MARK
