"""The weekly reconciliation (BDX-31) in its op: a read-back failing for one type, or deletions it could not
confirm, and the op reconciles every other type (their deletions tombstoned), then fails naming that type, instead
of stopping at it every week; ids the listing lacked but the EHR still has are counted (``alive``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from dagster import DagsterInstance, Definitions, JobDefinition

from connectors.errors import FhirServerError
from ehrsync.run_now import run_sync_now
from engine import deletes
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions, domain_definitions
from pipelines.defs.maintenance.jobs import RECONCILE_JOB
from pipelines.resources import EhrHttpResource, default_resources
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import FAST_RETRY, SyncWorld, connect_patient
from tests.pipelines.test_end_to_end import live_counts


def test_a_failed_read_back_fails_the_op_after_every_type_is_reconciled_bdx31(
    tmp_path: Path, http: httpx.Client, world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as one, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, one, http=http)
        assert run_sync_now(cid, settings=settings, instance=instance).success
        con = duckdb.connect(settings.warehouse_url)  # the warehouse lacks the Patient (the first type) now
        con.execute("DELETE FROM fhir_resources WHERE resource_type = 'Patient'")
        con.close()
        changes = http.post(f"{one.base_url}/admin/mutate", json={"delete": 2, "seed": 3})
        changes.raise_for_status()
        deleted = [ref.split("/")[0] for ref in changes.json()["deleted"]]
        assert deleted and "Patient" not in deleted
        before = live_counts(settings.warehouse_url, cid)

        def unreadable(*_: Any, **__: Any) -> Any:
            raise FhirServerError("GET Patient/... answered HTTP 500", 500)

        monkeypatch.setattr(deletes, "land_by_ids", unreadable)
        reconcile = build_definitions(settings).resolve_job_def("reconcile_deletes")
        result = reconcile.execute_in_process(partition_key=cid, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "Patient: fhir_server_error" in str(failure.step_failure_data.error)
    after = live_counts(settings.warehouse_url, cid)
    for rtype in set(deleted):  # the types after the Patient were reconciled all the same
        assert after[rtype] == before[rtype] - deleted.count(rtype), rtype


def _fast_retrying_reconcile(settings: PipelineSettings) -> JobDefinition:
    """The reconcile job ``build_definitions(settings)`` binds, its EHR client retrying a dropped request after
    0.05 s, not 2 s (``EhrHttpResource.retry_min_s``, ``retry_cap_s``): the same retries, without waiting 30 s for
    each request the test has the EHR drop every time."""
    resources = default_resources(settings)
    bound = resources["ehr_http"]  # Dagster binds a resource's constructor fields (not a model_copy's): name them
    assert isinstance(bound, EhrHttpResource)
    resources["ehr_http"] = EhrHttpResource(
        fetch_allowed_hosts=bound.fetch_allowed_hosts,
        max_response_bytes=bound.max_response_bytes,
        request_deadline_s=bound.request_deadline_s,
        retry_min_s=FAST_RETRY.retry_after_min_s,
        retry_cap_s=FAST_RETRY.backoff_cap_s,
    )
    defs = Definitions.merge(*domain_definitions(settings), Definitions(resources=resources))
    return defs.resolve_job_def(RECONCILE_JOB)


def _output_metadata(result: Any) -> dict[str, Any]:
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def test_the_op_reports_ids_kept_alive_and_fails_naming_a_type_whose_deletions_it_could_not_confirm_bdx31(
    tmp_path: Path, http: httpx.Client, world: SyncWorld
) -> None:
    """The id listing skips a live Observation: the op's output and the type's materialization count it as
    ``alive`` (kept live) beside the rows tombstoned. Then reads by id of Observations fail on a server that
    ignores ``_id``: those deletions stay unconfirmed (the rows live), the other types are reconciled, and the op
    fails naming Observation."""
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as one, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, one, http=http)
        assert run_sync_now(cid, settings=settings, instance=instance).success
        reconcile = _fast_retrying_reconcile(settings)
        gone = [r for r in one.admin.mutate(delete=25, seed=3)["deleted"] if r.startswith("Observation/")]
        before = live_counts(settings.warehouse_url, cid)
        one.admin.settings(max_count=5)  # the listings page, and one page of the Observations' skips a match
        one.admin.set_fault("search_silent_skip", path="/fhir/Observation", times=1)
        result = reconcile.execute_in_process(partition_key=cid, instance=instance)
        assert result.success and gone
        metadata = _output_metadata(result)
        assert metadata["alive"] == {"Observation": 1} and metadata["unconfirmed"] == {}
        assert metadata["deleted"]["Observation"] == len(gone)
        assert live_counts(settings.warehouse_url, cid)["Observation"] == before["Observation"] - len(gone)
        (marked,) = [
            e.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.materialization.asset_key.to_user_string() == "warehouse/Observation"
        ]
        assert marked["alive"].value == 1 and marked["deleted"].value == len(gone)

        gone = [r for r in one.admin.mutate(delete=25, seed=4)["deleted"] if r.startswith("Observation/")]
        before = live_counts(settings.warehouse_url, cid)
        one.admin.settings(ignored_search_params=["_id"])  # every candidate is read by id
        one.admin.set_fault("drop", path="/fhir/Observation/", times=None)
        failed = reconcile.execute_in_process(partition_key=cid, instance=instance, raise_on_error=False)
    assert not failed.success and gone
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    said = str(failure.step_failure_data.error)
    assert f"confirming deletions failed for Observation (those rows kept live): Observation: {len(gone)} id(s)" in said
    assert not any(ref.split("/")[1] in said for ref in gone)
    assert live_counts(settings.warehouse_url, cid)["Observation"] == before["Observation"]


def test_a_grant_without_read_reports_the_type_unconfirmable_and_the_op_succeeds_bdx31(
    tmp_path: Path, http: httpx.Client, world: SyncWorld
) -> None:
    """``patient/Observation.s`` without ``.r``, and a server whose ``_id`` searches settle nothing (it ignores
    ``_id``): the deleted Observations cannot be confirmed gone, this week or any other until the grant changes.
    They stay live; the op succeeds (the other types' deletions tombstoned), its output metadata names Observation
    ``unconfirmable`` with the scope the grant lacks. Before, the op failed every week for it."""
    scope = "launch/patient openid fhirUser offline_access patient/*.rs patient/Observation.s"
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    config = SandboxConfig(patients=1, seed=5, ignored_search_params=["_id"])
    with SandboxServer(config) as one, DagsterInstance.ephemeral() as instance:
        scope = scope.replace("patient/*.rs", "patient/Patient.rs patient/Condition.rs patient/Encounter.rs")
        cid = connect_patient(world, one, http=http, scope=scope)
        assert run_sync_now(cid, settings=settings, instance=instance).success
        deleted = [ref.split("/")[0] for ref in one.admin.mutate(delete=25, seed=3)["deleted"]]
        before = live_counts(settings.warehouse_url, cid)
        assert "Observation" in deleted and set(before) & set(deleted) - {"Observation"}, (deleted, before)
        reconcile = build_definitions(settings).resolve_job_def("reconcile_deletes")
        result = reconcile.execute_in_process(partition_key=cid, instance=instance, raise_on_error=False)
    assert result.success
    metadata = _output_metadata(result)
    (said,) = metadata["unconfirmable"].values()
    assert list(metadata["unconfirmable"]) == ["Observation"] and "patient/Observation.r not granted" in said
    assert metadata["unconfirmed"] == {"Observation": deleted.count("Observation")}
    after = live_counts(settings.warehouse_url, cid)
    assert after["Observation"] == before["Observation"]  # kept live, never tombstoned unconfirmed
    for rtype in set(before) & set(deleted) - {"Observation"}:  # the granted types besides it
        assert after[rtype] == before[rtype] - deleted.count(rtype), rtype
