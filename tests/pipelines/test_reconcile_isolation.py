"""The weekly reconciliation (BDX-31) isolates each type as a sync isolates its type steps: a type whose id
listing fails (its step budget spent by a trickling answer, a 5xx after the retries) is not reconciled this run,
nothing of it tombstoned, and every other type of the connection still is; the run then fails naming the type
and why. Before, the first such type failed the run and the types after it waited a week."""

from __future__ import annotations

from typing import Any

import httpx
from dagster import DagsterInstance, ExecuteInProcessResult

from engine import PATIENT_TYPES
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import run_reconcile, sync_type
from tests.pipelines.test_end_to_end import live_counts

_BUDGET_S = 3.0  # each type's: the trickled Patient listing spends it, the types after it each have their own


def _failure_metadata(result: ExecuteInProcessResult) -> tuple[str, dict[str, Any]]:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data
    return str(data.error), {k: v.value for k, v in (data.user_failure_data.metadata or {}).items()}


def test_a_type_whose_listing_fails_fails_alone_and_the_others_are_reconciled_bdx31(
    http: httpx.Client, world: SyncWorld
) -> None:
    """Patient (the first type) answers its id listing a byte every half second: its step budget runs out; the
    Encounter listing answers 500 after every retry. Both fail alone, nothing of them tombstoned; every later
    type's deletions are tombstoned; the run fails naming both, the Patient one with a reconcile's wording (no
    "mark": a reconcile has none)."""
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as one, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, one, http=http)
        for rtype in PATIENT_TYPES:  # engine-level: a Dagster sync run would double the test's time
            assert sync_type(world, cid, rtype).error is None, rtype
        deleted = [ref.split("/")[0] for ref in one.admin.mutate(delete=40, seed=3)["deleted"]]
        later = set(deleted) - {"Patient", "Encounter"}
        assert "Encounter" in deleted and later, deleted
        before = live_counts(world.env.warehouse_target, cid)
        one.admin.set_fault("trickle", path="/fhir/Patient", delay_s=0.5, times=None)
        one.admin.set_fault("500", path="/fhir/Encounter", times=None)
        world.env.step_budget_s = _BUDGET_S
        result = run_reconcile(world, cid, instance)
    assert not result.success
    said, metadata = _failure_metadata(result)
    assert "reconciling Patient" in said and "step_budget_exceeded" in said, said
    assert "nothing of Patient was tombstoned" in said and "next reconcile" in said and "mark" not in said, said
    assert "Encounter: fhir_server_error" in said, said
    assert set(metadata["not_reconciled"]) == {"Patient", "Encounter"}, metadata
    after = live_counts(world.env.warehouse_target, cid)
    assert after["Patient"] == before["Patient"] and after["Encounter"] == before["Encounter"]
    for rtype in later:  # reconciled all the same
        assert after[rtype] == before[rtype] - deleted.count(rtype), rtype
