"""A batch run (``incremental_sync_batch``) evaluates, for each member's partition, the asset checks the member's
own ``incremental_sync`` run evaluates: same checks on the same assets, each verdict the member's own.

Real jobs in-process on one Dagster instance against the sandbox; the check records are read back from the
instance's event log, as the UI reads them.
"""

from __future__ import annotations

import duckdb
from dagster import AssetCheckKey, DagsterEventType, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.base import PartitionKeyFilter

from ehrsync.run_now import run_batch_now, run_sync_now
from pipelines.defs.sync.type_assets import DUPLICATE_CHECK, QUARANTINE_CHECK, landing_key, warehouse_key
from tests.engine.helpers import SyncWorld, _admin, connect_patient, sandbox_patients
from tests.engine.job_runs import world_resources, world_settings


def _check_key(name: str) -> AssetCheckKey:
    """``landing/Observation:quarantine_within_threshold`` (as ``SyncNowResult.checks`` names it) → its key."""
    asset, check = name.split(":")
    group, resource_type = asset.split("/")
    key = landing_key(resource_type) if group == "landing" else warehouse_key(resource_type)
    return AssetCheckKey(key, check)


def _verdicts(instance: DagsterInstance, run_id: str, keys: list[AssetCheckKey], partition: str) -> dict[str, bool]:
    """The run's check verdicts recorded for ``partition``, by ``asset:check`` name."""
    found: dict[str, bool] = {}
    for key in keys:
        history = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=5, partition_filter=PartitionKeyFilter(key=partition)
        )
        for record in history:
            if record.run_id == run_id:
                assert record.status in (
                    AssetCheckExecutionRecordStatus.SUCCEEDED,
                    AssetCheckExecutionRecordStatus.FAILED,
                )
                found[f"{key.asset_key.to_user_string()}:{key.name}"] = (
                    record.status is AssetCheckExecutionRecordStatus.SUCCEEDED
                )
    return found


def _duplicate_one_row(world: SyncWorld, connection_id: str, keep_clear_of: list[str]) -> None:
    """A second row under an existing Observation key (DuckDB enforces no key; only the merge keeps it), on an id
    the next sync does not rewrite (a merge of a new version leaves one row per key)."""
    con = duckdb.connect(world.env.warehouse_target)
    try:
        con.execute(
            "INSERT INTO fhir_resources SELECT * FROM fhir_resources "
            "WHERE connection_id = ? AND resource_type = 'Observation' AND NOT list_contains(?, id) LIMIT 1",
            [connection_id, keep_clear_of],
        )
    finally:
        con.close()


def _materialized(instance: DagsterInstance, run_id: str, partition: str) -> set[str]:
    """The assets the run materialized for ``partition`` (``landing/Observation``...)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    found = set()
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.partition == partition:
            found.add(materialization.asset_key.to_user_string())
    return found


def test_each_member_of_a_batch_gets_its_own_runs_checks(start_sandbox, world, http):
    sb = start_sandbox(patients=2)
    patients = sandbox_patients(http, sb)[:2]
    first, second = (connect_patient(world, sb, http=http, patient_id=p) for p in patients)
    settings, resources = world_settings(world), world_resources(world)
    with DagsterInstance.ephemeral() as instance:
        own = run_sync_now(first, settings=settings, instance=instance, resources=resources)
        assert own.success and own.checks and all(own.checks.values()), own.checks
        names = sorted(own.checks)
        assert any(n.endswith(QUARANTINE_CHECK) for n in names) and any(n.endswith(DUPLICATE_CHECK) for n in names)
        keys = [_check_key(n) for n in names]

        batch = run_batch_now([first, second], "generic", settings=settings, instance=instance, resources=resources)
        assert batch.success
        # second's first sync: the same checks as a run of its own, on its partition; first found nothing new, so
        # its last verdicts (its own run's) still stand and the batch logs none for it (batch_checks.py)
        assert _verdicts(instance, batch.run_id, keys, second) == dict.fromkeys(names, True)
        assert _verdicts(instance, batch.run_id, keys, first) == {}
        assert _materialized(instance, batch.run_id, first) == set()

        changed_refs = _admin(http, sb, "mutate", {"update": 30, "seed": 3, "patients": [patients[1]]})["updated"]
        observations = [ref.split("/")[1] for ref in changed_refs if ref.startswith("Observation/")]
        assert observations, changed_refs  # seeded: the update reaches Observation, so its checks run
        _duplicate_one_row(world, second, keep_clear_of=observations)
        again = run_batch_now([first, second], "generic", settings=settings, instance=instance, resources=resources)
        assert again.success  # a failed check is the check's verdict, not a failed sync (as in a run of its own)
        assert _verdicts(instance, again.run_id, keys, first) == {}
        verdicts = _verdicts(instance, again.run_id, keys, second)
        assert f"warehouse/Observation:{DUPLICATE_CHECK}" in verdicts  # Observation changed: its checks ran
        assert {n for n, passed in verdicts.items() if not passed} == {f"warehouse/Observation:{DUPLICATE_CHECK}"}
        # exactly the changed types were materialized, each with both of its checks
        changed = _materialized(instance, again.run_id, second)
        assert changed and {n.split(":")[0] for n in verdicts} == changed
