"""Issue 12: patient and bulk connections in separate partition sets, an old ``connections`` set migrated by the
real connections sensor, keys in the wrong set refused by the steps, and what every asset says about its table."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, AssetMaterialization, AssetRecordsFilter, DagsterInstance, Definitions

from engine.planning import ConnectionsCursor, PartitionSets, plan_partitions
from engine.run_tags import KIND_TAG, TENANT_NAME_TAG
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs._shared.partitions import (
    BULK_CONNECTIONS_PARTITIONS_NAME,
    LEGACY_CONNECTIONS_PARTITIONS_NAME,
    PATIENT_CONNECTIONS_PARTITIONS_NAME,
)
from pipelines.defs._shared.tables import ASSET_OWNERS, FHIR_RESOURCES_TABLE
from pipelines.defs.analyst.assets import ANALYST_OWNERS
from tests.pipelines.appdb import AppDb, queued_run
from tests.pipelines.test_connections_sensor import apply_partitions, evaluate
from warehouse._sql import RESOURCE_COLUMNS

PATIENT_ASSET = AssetKey(["warehouse", "Patient"])


def _sets(instance: DagsterInstance) -> dict[str, list[str]]:
    return {
        name: sorted(instance.get_dynamic_partitions(name))
        for name in (
            PATIENT_CONNECTIONS_PARTITIONS_NAME,
            BULK_CONNECTIONS_PARTITIONS_NAME,
            LEGACY_CONNECTIONS_PARTITIONS_NAME,
        )
    }


def test_new_connections_go_to_their_own_set_with_readable_tags(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    patient = app_db.add("patient-1")
    group = app_db.add("group-1", kind="group", provider="cerner")
    result = evaluate(dagster_instance, app_db.url)
    apply_partitions(dagster_instance, result)
    assert _sets(dagster_instance) == {
        PATIENT_CONNECTIONS_PARTITIONS_NAME: [patient],
        BULK_CONNECTIONS_PARTITIONS_NAME: [group],
        LEGACY_CONNECTIONS_PARTITIONS_NAME: [],
    }
    tags = {r.partition_key: r.tags for r in result.run_requests or []}
    assert tags[patient][TENANT_NAME_TAG] == "Test practice" and tags[patient][KIND_TAG] == "patient"
    assert tags[group][KIND_TAG] == "group"


def test_an_old_connections_set_is_migrated_without_new_first_syncs(
    app_db: AppDb, dagster_instance: DagsterInstance
) -> None:
    """An instance from before issue 12: one ``connections`` set, a first sync already requested for the
    connection that never completed one, history recorded under the old keys."""
    now = datetime.now(UTC)
    synced = app_db.add("p-synced", last_sync=now)
    pending = app_db.add("p-pending")  # its first sync was requested by the old sensor and has not finished
    group = app_db.add("g-synced", kind="group", last_sync=now)
    dagster_instance.add_dynamic_partitions(LEGACY_CONNECTIONS_PARTITIONS_NAME, [synced, pending, group, "gone"])
    old_cursor = ConnectionsCursor(now + timedelta(minutes=5)).serialize()  # the old sensor saw every row
    dagster_instance.report_runless_asset_event(
        AssetMaterialization(asset_key=PATIENT_ASSET, partition=synced, metadata={"created": 1})
    )
    gone_run = queued_run(dagster_instance, "gone")

    result = evaluate(dagster_instance, app_db.url, old_cursor)
    apply_partitions(dagster_instance, result)

    assert not result.run_requests  # moved keys are not new connections: no second first sync
    assert _sets(dagster_instance) == {
        PATIENT_CONNECTIONS_PARTITIONS_NAME: [pending, synced],
        BULK_CONNECTIONS_PARTITIONS_NAME: [group],
        LEGACY_CONNECTIONS_PARTITIONS_NAME: [],
    }
    stopped = dagster_instance.get_run_by_id(gone_run.run_id)
    assert stopped is not None and stopped.status.value == "CANCELED"  # a deleted connection's runs still stop
    # History is keyed by asset and partition key, not by the set: the same key shows its old materialization.
    records = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=PATIENT_ASSET, asset_partitions=[synced]), limit=5
    ).records
    assert len(records) == 1
    again = evaluate(dagster_instance, app_db.url, result.cursor)
    assert not again.dynamic_partitions_requests and not again.run_requests


def test_a_key_in_the_wrong_set_is_moved_not_dropped() -> None:
    from engine.connection_snapshots import ConnectionSnapshot

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    group = ConnectionSnapshot("g1", "t1", "epic", "group", "active", created_at=t0, updated_at=t0, last_sync_at=t0)
    plan = plan_partitions([group], PartitionSets(patient=frozenset({"g1"})), ConnectionsCursor(t0))
    assert (plan.add_bulk, plan.remove_patient, plan.departed, plan.stop_runs_of) == (("g1",), ("g1",), (), ())
    assert plan.first_syncs == ()


@pytest.fixture
def loaded(tmp_path: Path, app_db: AppDb, monkeypatch: pytest.MonkeyPatch) -> Definitions:
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())  # steps open the vault
    return build_definitions(
        PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "DATABASE_URL": app_db.url})
    )


def test_materialize_missing_lists_only_the_assets_own_kind(
    loaded: Definitions, dagster_instance: DagsterInstance
) -> None:
    dagster_instance.add_dynamic_partitions(PATIENT_CONNECTIONS_PARTITIONS_NAME, ["p1", "p2"])
    dagster_instance.add_dynamic_partitions(BULK_CONNECTIONS_PARTITIONS_NAME, ["g1"])
    graph = loaded.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        group = key.path[0]
        if group not in ("landing", "warehouse", "bulk"):
            continue  # the analyst views are another package's
        partitions = graph.get(key).partitions_def
        assert partitions is not None
        expected = ["g1"] if group == "bulk" else ["p1", "p2"]
        assert partitions.get_partition_keys(dynamic_partitions_store=dagster_instance) == expected, key


@pytest.mark.parametrize(
    ("kind", "partitions_name", "job", "selection"),
    [
        ("group", PATIENT_CONNECTIONS_PARTITIONS_NAME, "incremental_sync", [AssetKey(["landing", "Patient"])]),
        ("patient", BULK_CONNECTIONS_PARTITIONS_NAME, "bulk_export", None),
    ],
)
def test_a_step_refuses_a_connection_of_the_other_kind(
    loaded: Definitions,
    app_db: AppDb,
    dagster_instance: DagsterInstance,
    kind: str,
    partitions_name: str,
    job: str,
    selection: list[AssetKey] | None,
) -> None:
    """Someone adds a key by hand to the wrong set in the UI and materializes it: the step fails before any EHR
    call (the connection's fhir_base is a closed port) with an error naming the right set."""
    cid = app_db.add(f"wrong-{kind}", kind=kind)
    dagster_instance.add_dynamic_partitions(partitions_name, [cid])
    result = loaded.resolve_job_def(job).execute_in_process(
        partition_key=cid, instance=dagster_instance, raise_on_error=False, asset_selection=selection
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures
    message = str(failures[0].step_failure_data.error.message if failures[0].step_failure_data.error else "")
    right = BULK_CONNECTIONS_PARTITIONS_NAME if kind == "group" else PATIENT_CONNECTIONS_PARTITIONS_NAME
    assert f"its partition belongs to {right}" in message
    assert not result.get_asset_materialization_events()


def test_every_asset_has_an_owner(loaded: Definitions) -> None:
    """docs/PIPELINES.md: every ehrsync asset has owner ``team:ehrsync``, the analysts' views ``team:analytics``.
    ``writeback/note_outbox`` had none, so the UI's owner filter left the outbox out."""
    graph = loaded.resolve_asset_graph()
    owners = {key.to_user_string(): graph.get(key).owners for key in graph.get_all_asset_keys()}
    assert owners["writeback/note_outbox"] == ASSET_OWNERS
    for key, names in owners.items():
        assert names == (ANALYST_OWNERS if key.startswith("analyst/") else ASSET_OWNERS), key


def test_every_asset_has_owner_group_table_name_and_column_schema(loaded: Definitions) -> None:
    graph = loaded.resolve_asset_graph()
    checked = 0
    for key in graph.get_all_asset_keys():
        group = key.path[0]
        if group not in ("landing", "warehouse", "bulk"):
            continue
        node = graph.get(key)
        assert node.owners == ASSET_OWNERS, key
        assert node.group_name == group, key
        metadata = node.metadata
        schema = metadata["dagster/column_schema"].schema
        if group == "landing":
            assert (
                metadata["dagster/table_name"].text
                == f"landing/{{connection_id}}/{key.path[1]}/{{run_id}}-{{seq}}.parquet"
            )
            assert "resource_json" in {c.name for c in schema.columns}
        else:
            assert metadata["dagster/table_name"].text == FHIR_RESOURCES_TABLE
            assert tuple(c.name for c in schema.columns) == RESOURCE_COLUMNS
        checked += 1
    assert checked == 2 * 15 + 1
