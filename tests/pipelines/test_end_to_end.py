"""The real Dagster jobs end to end against the sandbox: ``run_sync_now`` runs production's ``incremental_sync``,
``full_resync`` and ``bulk_export`` jobs in-process for one partition (the definitions the code location loads,
bound to their real resources) → assets → warehouse rows, metadata, checks, and the ``sync_runs`` row closed by
``finish_sync_run``, as the run status sensors close a launched run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster import AssetKey, DagsterInstance

from ehrsync.run_now import SyncNowResult, run_sync_now
from engine import cursors, runs
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient
from tests.pipelines.backend import connect_backend_with_config
from warehouse import open_warehouse

NO_IMMUNIZATION = (
    "launch/patient openid fhirUser offline_access patient/Patient.rs patient/Observation.rs patient/Condition.rs "
    "patient/Encounter.rs"
)


@pytest.fixture(scope="module")
def ehr() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(patients=2, seed=11)) as server:
        yield server


def settings_for(tmp_path: Path) -> PipelineSettings:
    return PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state")})


def live_counts(target: str, connection_id: str) -> dict[str, int]:
    wh = open_warehouse(target)
    try:
        return {
            str(row["resource_type"]): int(row["live"]) for row in wh.summary() if row["connection_id"] == connection_id
        }
    finally:
        wh.close()


def test_first_sync_then_full_then_incremental_changes_then_weekly_reconcile_bdx31(
    tmp_path: Path, http: httpx.Client, world: SyncWorld
) -> None:
    """One patient's life: first sync, full resync (nothing new), EHR changes picked up incrementally, and the
    deletes search cannot report tombstoned by the reconcile job (BDX-31)."""
    settings = settings_for(tmp_path)
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as one, DagsterInstance.ephemeral() as instance:
        cid = connect_patient(world, one, http=http)
        first = run_sync_now(cid, settings=settings, instance=instance)
        assert first.success, first.failed_steps
        assert first.job_name == "incremental_sync"
        assert all(first.checks.values()), first.checks
        assert "warehouse/Observation:no_duplicate_keys" in first.checks
        assert "landing/Observation:quarantine_within_threshold" in first.checks
        assert first.materializations["warehouse/Patient"]["created"] == 1
        # issue 12: rows stored for the partition, and who the partition is (tenant, source, kind; no PHI)
        assert first.materializations["warehouse/Patient"]["dagster/row_count"] == 1
        assert first.materializations["landing/Patient"]["dagster/row_count"] == 1
        assert first.materializations["warehouse/Patient"]["connection_kind"] == "patient"
        assert first.materializations["landing/Observation"]["source"] == "generic"
        observations = first.materializations["landing/Observation"]
        assert observations["fetched"] > 0
        assert observations["pages"] >= 1
        assert observations["bytes"] > 0
        assert observations["high_water_mark"] != "none"
        assert observations["skipped"] is False
        counts = live_counts(settings.warehouse_url, cid)
        for resource_type, live in counts.items():
            assert live == first.materializations[f"warehouse/{resource_type}"]["created"], resource_type
        assert counts["Patient"] == 1
        # Referenced resources were read by id after the clinical types queued them.
        referenced = [first.materializations[f"warehouse/{t}"] for t in ("Practitioner", "Organization", "Location")]
        assert sum(m["created"] for m in referenced) > 0
        record = runs.get(world.env.db, first.run_id)
        assert record is not None and record.status == "completed"
        assert instance.has_dynamic_partition("patient_connections", cid) and not instance.has_dynamic_partition(
            "bulk_connections", cid
        )
        assert instance.get_latest_materialization_event(AssetKey(["warehouse", "Patient"])) is not None

        # Full resync: marks ignored, everything fetched again, nothing changed.
        full = run_sync_now(cid, full=True, settings=settings, instance=instance)
        assert full.job_name == "full_resync"
        assert full.success, full.failed_steps
        landed, upserted = full.materializations["landing/Observation"], full.materializations["warehouse/Observation"]
        assert landed["fetched"] == observations["fetched"]
        assert upserted["unchanged"] == landed["fetched"] - landed["quarantined"]
        assert sum(m["created"] + m["updated"] for m in full.materializations.values()) == 0
        full_record = runs.get(world.env.db, full.run_id)
        assert full_record is not None and full_record.kind == "full"

        # The EHR changes: the incremental run finds exactly the creations and updates; deletes stay live.
        changes = http.post(f"{one.base_url}/admin/mutate", json={"create": 2, "update": 2, "delete": 2, "seed": 3})
        changes.raise_for_status()
        assert len(changes.json()["deleted"]) == 2
        incremental = run_sync_now(cid, settings=settings, instance=instance)
        assert incremental.success, incremental.failed_steps
        assert sum(m["created"] for m in incremental.materializations.values()) == 2
        assert sum(m["updated"] for m in incremental.materializations.values()) == 2
        assert sum(live_counts(settings.warehouse_url, cid).values()) == sum(counts.values()) + 2

        reconcile = build_definitions(settings).resolve_job_def("reconcile_deletes")
        result = reconcile.execute_in_process(partition_key=cid, instance=instance)
        assert result.success
        tombstoned = result.output_for_node("reconcile_connection")
        expected: dict[str, int] = {}
        for ref in changes.json()["deleted"]:
            expected[ref.split("/")[0]] = expected.get(ref.split("/")[0], 0) + 1
        assert {t: n for t, n in tombstoned.items() if n} == expected
        assert sum(live_counts(settings.warehouse_url, cid).values()) == sum(counts.values())
        marked = {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert marked == {f"warehouse/{t}" for t in expected}


def test_refused_type_materializes_as_skipped_not_failed(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    cid = connect_patient(world, ehr, http=http, scope=NO_IMMUNIZATION)
    result = run_sync_now(cid, settings=settings_for(tmp_path), instance=DagsterInstance.ephemeral())
    assert result.success, result.failed_steps
    for step in ("landing", "warehouse"):
        meta = result.materializations[f"{step}/Immunization"]
        assert meta["skipped"] is True
        assert meta["skipped_reason"] == "scope_not_granted"
    assert result.materializations["warehouse/Observation"]["skipped"] is False


def test_backend_connection_runs_the_bulk_export_job_and_checks_counts_bdx20(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """Also the demo's path: no instance given, so the run is recorded under <state>/dagster_home for the UI."""
    cid = connect_backend_with_config(world, ehr, http=http)
    settings = settings_for(tmp_path)
    result = run_sync_now(cid, settings=settings)
    with DagsterInstance.from_config(str(settings.dagster_home)) as persisted:
        run = persisted.get_run_by_id(result.run_id)
        assert run is not None and run.tags["ehrsync/trigger"] == "manual"
        assert persisted.has_dynamic_partition("bulk_connections", cid) and not persisted.has_dynamic_partition(
            "patient_connections", cid
        )
    assert result.job_name == "bulk_export"
    assert result.success, result.failed_steps
    export = result.materializations["bulk/export"]
    assert export["files"] > 0
    assert export["created"] > 0
    assert export["high_water_mark"] != "none"
    assert result.checks == {
        "bulk/export:manifest_line_counts_match": True,
        "bulk/export:quarantine_within_threshold": True,
        "bulk/export:no_duplicate_keys": True,
        "bulk/export:export_complete": True,
        "bulk/export:no_server_errors": True,  # issue 12 (sync_freshness runs on its own schedule)
    }
    assert export["dagster/row_count"] == export["live_rows"]  # issue 12: rows stored for the partition
    assert export["connection_kind"] == run.tags["ehrsync/kind"] == "backend"
    assert export["tenant_name"] == run.tags["ehrsync/tenant_name"] != ""
    assert export["live_rows"] == export["created"]
    assert sum(live_counts(settings_for(tmp_path).warehouse_url, cid).values()) == export["created"]


def test_manifest_count_above_the_file_fails_the_export_complete_check_and_the_run(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """Issue 10 / BDX-20: a file with fewer resources than its manifest count (maybe cut at a line boundary) is
    fetched again; still short, its type is incomplete: the blocking check fails and the run's row names it."""
    cid = connect_backend_with_config(world, ehr, http=http)
    http.post(f"{ehr.base_url}/admin/faults", json={"kind": "bulk_wrong_count", "times": 1}).raise_for_status()
    try:
        result = run_sync_now(cid, settings=settings_for(tmp_path), instance=DagsterInstance.ephemeral())
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()
    assert not result.success
    assert result.checks["bulk/export:manifest_line_counts_match"] is False
    assert result.checks["bulk/export:export_complete"] is False
    assert result.materializations["bulk/export"]["count_mismatches"] >= 1
    record = runs.get(world.env.db, result.run_id)
    assert record is not None and record.status == "failed" and "bulk_export_incomplete" in (record.error or "")


def test_a_signed_file_url_in_a_count_mismatch_stays_out_of_dagster_metadata(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """A storage host's signed file URL (its query is a credential to the patients' data until it expires) must not
    reach the run's event log when the manifest check names the file: the check names it by its path alone."""
    cid = connect_backend_with_config(world, ehr, http=http)
    http.post(f"{ehr.base_url}/admin/settings", json={"bulk_signed_file_urls": True}).raise_for_status()
    http.post(f"{ehr.base_url}/admin/faults", json={"kind": "bulk_wrong_count", "times": 1}).raise_for_status()
    try:
        with DagsterInstance.ephemeral() as instance:
            result = run_sync_now(cid, settings=settings_for(tmp_path), instance=instance)
            logged = [str(entry) for entry in instance.all_logs(result.run_id)]
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()
        http.delete(f"{ehr.base_url}/admin/settings").raise_for_status()
    assert result.checks["bulk/export:manifest_line_counts_match"] is False
    assert any("/bulk/files/" in line and "manifest_count" in line for line in logged)  # the file is named
    assert not [line for line in logged if "X-Amz-Signature" in line]


def _export_with_an_observation_error_file(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> tuple[str, SyncNowResult]:
    """A backend connection's Bulk sync whose export reports an error file naming Observation (issue 10 / BDX-22)."""
    cid = connect_backend_with_config(world, ehr, http=http)
    fault = {"kind": "bulk_error_file", "resource_type": "Observation", "times": 1}
    http.post(f"{ehr.base_url}/admin/faults", json=fault).raise_for_status()
    try:
        return cid, run_sync_now(cid, settings=settings_for(tmp_path), instance=DagsterInstance.ephemeral())
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()


def test_error_file_naming_a_type_fails_the_export_complete_check_and_the_run(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """Issue 10 / BDX-22: a fatal outcome for Observation fails the blocking check (and so the run); the landed
    types are materialized and the run's row names the type."""
    cid, result = _export_with_an_observation_error_file(tmp_path, ehr, http, world)
    assert not result.success
    assert result.checks["bulk/export:export_complete"] is False
    assert result.checks["bulk/export:no_server_errors"] is False  # issue 12: the server reported a fatal outcome
    assert "Observation" not in live_counts(settings_for(tmp_path).warehouse_url, cid)
    record = runs.get(world.env.db, result.run_id)
    assert record is not None and record.status == "failed" and "Observation" in (record.error or "")


def test_quarantined_bulk_lines_over_threshold_fail_the_check(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """A line of the wrong type is quarantined, counted, and (with no tolerance) fails the quarantine check."""
    cid = connect_backend_with_config(world, ehr, http=http)
    strict = PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "EHRSYNC_QUARANTINE_MAX_RATIO": "0"}
    )
    http.post(f"{ehr.base_url}/admin/faults", json={"kind": "bulk_mixed_type", "times": 1}).raise_for_status()
    try:
        result = run_sync_now(cid, settings=strict, instance=DagsterInstance.ephemeral())
    finally:
        http.delete(f"{ehr.base_url}/admin/faults").raise_for_status()
    assert result.success, result.failed_steps
    assert result.materializations["bulk/export"]["quarantined"] >= 1
    assert result.checks["bulk/export:quarantine_within_threshold"] is False


def test_a_partial_export_reports_the_mark_it_stored_not_the_transaction_time_it_held(
    tmp_path: Path, ehr: SandboxServer, http: httpx.Client, world: SyncWorld
) -> None:
    """BDX-14/22: an export whose error file names a type holds ``_since``; the materialization's
    ``high_water_mark`` says what the run stored (nothing), not the transactionTime it did not commit."""
    cid, result = _export_with_an_observation_error_file(tmp_path, ehr, http, world)
    assert result.checks["bulk/export:export_complete"] is False
    export = result.materializations["bulk/export"]
    assert cursors.get_mark(world.env.db, cid, cursors.bulk_stream("system", None), "*") is None
    assert export["high_water_mark"] == "none"
    assert export["transaction_time"] != "none"  # what the server answered is still shown, under its own name
