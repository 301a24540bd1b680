"""Re-executing a failed ``incremental_sync_batch`` run from the UI, through the real job in-process against the
sandbox. The batch is one op, so Dagster's "Re-execute from failure" runs all of it again: without more, every
member would be synced again, the ones that completed too (a second pass of requests at an EHR that may be
throttling the source). A re-execution from failure syncs only the members that did not complete in the run it
carries on (failed, deferred, never reached); "Re-execute all" syncs every member again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance

from engine import runs
from engine.batch_sync import batch_sync_run_id
from engine.retries import failure_streaks, source_holds
from pipelines.defs.sync.batch import BATCH_SYNC_JOB, batch_run_config, batch_run_tags
from pipelines.defs.sync.type_assets import warehouse_key
from sandbox import SandboxServer
from store.models import Connection
from tests.engine import reexecution
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import world_resources, world_settings
from tests.engine.test_batch_runs import _set_base


@pytest.fixture
def batch(world: SyncWorld) -> Iterator[DagsterInstance]:
    """An instance whose ``incremental_sync_batch`` job runs over ``world``."""
    reexecution.bind(world_settings(world), world_resources(world), BATCH_SYNC_JOB)
    with DagsterInstance.ephemeral() as instance:
        yield instance


def _statuses(world: SyncWorld, run_id: str, ids: list[str]) -> dict[str, str | None]:
    """Each member's ``sync_runs`` row in that Dagster run (None: the run did not sync it)."""
    return {cid: getattr(runs.get(world.env.db, batch_sync_run_id(run_id, cid)), "status", None) for cid in ids}


def _patient_searches(request_log: RequestLog, world: SyncWorld, cid: str) -> int:
    with world.env.db.session() as session:
        patient = session.get(Connection, cid).patient_id  # type: ignore[union-attr]
    return sum(1 for u in request_log.paths("/fhir/") if patient in str(u))


def test_reexecution_from_failure_syncs_only_the_members_that_did_not_complete(
    start_sandbox: type[SandboxServer],
    world: SyncWorld,
    http: object,
    request_log: RequestLog,
    batch: DagsterInstance,
) -> None:
    sb = start_sandbox(patients=3)  # type: ignore[call-arg]
    ids = [connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3]]  # type: ignore[arg-type]
    good, broken, other = ids
    for cid in ids:
        batch.add_dynamic_partitions("patient_connections", [cid])
    real_base = _set_base(world, broken, "http://127.0.0.1:9/fhir")  # nothing listens there
    tags = batch_run_tags("generic", len(ids), "schedule")
    first, failed = reexecution.launch(batch, tags, run_config=batch_run_config(ids))
    assert failed
    assert _statuses(world, first, ids) == {good: "completed", broken: "failed", other: "completed"}

    _set_base(world, broken, real_base)
    request_log.clear()
    again, failed = reexecution.reexecute(batch, first, from_failure=True)
    assert not failed
    assert _statuses(world, again, ids) == {good: None, broken: "completed", other: None}
    assert _patient_searches(request_log, world, good) == _patient_searches(request_log, world, other) == 0
    assert _patient_searches(request_log, world, broken) > 0
    assert failure_streaks(world.env.db) == {}, "the retried member's success ends its streak"
    assert batch.get_materialized_partitions(warehouse_key("Observation")) == set(ids)

    # "Re-execute all" of the re-execution: every member again, the ones the earlier runs completed too.
    everything, failed = reexecution.reexecute(batch, again, from_failure=False)
    assert not failed
    assert set(_statuses(world, everything, ids).values()) == {"completed"}


def test_reexecution_from_failure_follows_the_newest_run_of_each_member(
    start_sandbox: type[SandboxServer],
    world: SyncWorld,
    http: object,
    batch: DagsterInstance,
) -> None:
    """A member that completed in the first run but failed in a later "Re-execute all" is retried by a
    re-execution from failure of that later run: what counts is each member's newest run in the lineage."""
    sb = start_sandbox(patients=2)  # type: ignore[call-arg]
    ids = [connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:2]]  # type: ignore[arg-type]
    first_fails, later_fails = ids
    for cid in ids:
        batch.add_dynamic_partitions("patient_connections", [cid])
    base = _set_base(world, first_fails, "http://127.0.0.1:9/fhir")
    first, failed = reexecution.launch(
        batch, batch_run_tags("generic", 2, "schedule"), run_config=batch_run_config(ids)
    )
    assert failed and _statuses(world, first, ids) == {first_fails: "failed", later_fails: "completed"}
    _set_base(world, first_fails, base)
    base = _set_base(world, later_fails, "http://127.0.0.1:9/fhir")
    everything, failed = reexecution.reexecute(batch, first, from_failure=False)
    assert failed and _statuses(world, everything, ids) == {first_fails: "completed", later_fails: "failed"}
    _set_base(world, later_fails, base)
    again, failed = reexecution.reexecute(batch, everything, from_failure=True)
    assert not failed and _statuses(world, again, ids) == {first_fails: None, later_fails: "completed"}


@pytest.mark.parametrize("operator", [False, True], ids=["automatic_retry", "operator"])
def test_an_automatic_retry_leaves_the_members_a_throttled_source_holds_to_the_scheduler(
    start_sandbox: type[SandboxServer],
    world: SyncWorld,
    http: object,
    request_log: RequestLog,
    batch: DagsterInstance,
    operator: bool,
) -> None:
    """BDX-10: Dagster's automatic run retry (``run_retries``, ``dagster/max_retries``) re-executes from failure the
    moment a batch fails, with no operator asking. A member stopped by its source's throttle (Retry-After past what
    ehrsync waits) and the members deferred after it are held until the source's time: the retry does not send
    them to the EHR again before it (no request, no row; their rows stay as they were, the scheduler asks for them
    then). Before, the retry synced them at once, a second refused request into the throttle per retry. An
    operator's "Re-execute from failure" still tries them at once: the operator asked."""
    sb = start_sandbox(patients=3)  # type: ignore[call-arg]
    ids = sorted(connect_patient(world, sb, http=http, patient_id=p) for p in sandbox_patients(http, sb)[:3])  # type: ignore[arg-type]
    for cid in ids:
        batch.add_dynamic_partitions("patient_connections", [cid])
    add_fault(http, sb, "429", path="/fhir", retry_after="3000", times=None)  # type: ignore[arg-type]
    tags = batch_run_tags("generic", len(ids), "schedule")
    first, failed = reexecution.launch(batch, tags, run_config=batch_run_config(ids))
    assert failed
    assert _statuses(world, first, ids) == {ids[0]: "failed", ids[1]: "deferred", ids[2]: "deferred"}

    request_log.clear()
    retry, _ = reexecution.reexecute(batch, first, from_failure=True, retry_number=None if operator else 1)
    sent = sum(1 for url in request_log.urls if url.path.startswith("/fhir"))
    if operator:
        assert sent > 0 and _statuses(world, retry, ids)[ids[0]] == "failed"
        return
    assert sent == 0, "the automatic retry sent held members to the throttled source"
    assert _statuses(world, retry, ids) == dict.fromkeys(ids)
    assert _statuses(world, first, ids) == {ids[0]: "failed", ids[1]: "deferred", ids[2]: "deferred"}
    assert set(source_holds(world.env.db)) == set(ids), "the scheduler still asks for them at the source's time"
