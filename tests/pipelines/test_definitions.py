"""The whole code location loads: a broken import, a bad schedule or a missing resource fails here, not in prod."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from dagster import AssetKey, DagsterInstance, Definitions

from connectors.fhir.resource_types import SYNCED_RESOURCE_TYPES
from ehrsync.dagster_instance import SHIPPED_DAGSTER_YAML, WORKSPACE_YAML, prepare_dagster_home, ui_command
from engine import PATIENT_TYPES, REFERENCED_TYPES
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.definitions import defs as load_defs

ROOT = Path(__file__).resolve().parents[2]
defs = load_defs()  # what Dagster loads (lazily: the settings are read when the location loads, not at import)


def test_definitions_load_and_validate() -> None:
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        "incremental_sync",
        "full_resync",
        "bulk_export",
        "reconcile_deletes",
        "keep_grants_alive",
        "purge_expired_connections",
        "prune_landing_files",
        "prune_dagster_runs",
        "check_sync_freshness",
        "write_back_note",
    }
    assert {s.name for s in repo.sensor_defs} == {
        "connections_sensor",
        "scheduled_syncs",
        "sync_run_success",
        "sync_run_failure",
        "sync_run_canceled",
        "analyst_views_sensor",
        "note_outbox_sensor",  # issue 13 write-back, off by default (docs/WRITEBACK.md)
    }
    assert {s.name for s in repo.schedule_defs} == {
        "weekly_reconcile_deletes",
        "refresh_idle_grants",
        "prune_dagster_runs_schedule",
        "daily_data_retention",
        "daily_landing_retention",
        "sync_freshness_checks",
    }


def test_every_type_has_a_landing_and_a_warehouse_asset_in_its_group() -> None:
    # the engine's two lists split connectors' one list of synced types: none left without assets, none in both
    assert sorted([*PATIENT_TYPES, *REFERENCED_TYPES]) == sorted(SYNCED_RESOURCE_TYPES)
    graph = defs.get_repository_def().asset_graph
    keys = graph.get_all_asset_keys()
    for resource_type in SYNCED_RESOURCE_TYPES:
        landing, warehouse = AssetKey(["landing", resource_type]), AssetKey(["warehouse", resource_type])
        assert landing in keys and warehouse in keys
        assert graph.get(landing).group_name == "landing"
        assert graph.get(warehouse).group_name == "warehouse"
        assert landing in graph.get(warehouse).parent_keys
        assert graph.get(landing).partitions_def is not None
    assert AssetKey(["bulk", "export"]) in keys
    # Referenced types are read after the clinical upserts that queue their references.
    assert AssetKey(["warehouse", "Observation"]) in graph.get(AssetKey(["landing", "Practitioner"])).parent_keys


def test_asset_checks_are_declared() -> None:
    check_names = {
        (k.asset_key.to_user_string(), k.name) for k in defs.get_repository_def().asset_graph.asset_check_keys
    }
    assert ("landing/Observation", "quarantine_within_threshold") in check_names
    assert ("warehouse/Observation", "no_duplicate_keys") in check_names
    assert ("bulk/export", "manifest_line_counts_match") in check_names
    assert ("bulk/export", "quarantine_within_threshold") in check_names
    assert ("bulk/export", "no_duplicate_keys") in check_names
    assert ("bulk/export", "export_complete") in check_names  # issue 10: error files naming failed types
    assert ("bulk/export", "no_server_errors") in check_names  # issue 12: any error/fatal outcome, non-blocking
    assert ("warehouse/Patient", "sync_freshness") in check_names  # issue 12: patient connections on schedule
    assert ("bulk/export", "sync_freshness") in check_names  # and bulk ones
    ours = {(key, name) for key, name in check_names if key.split("/")[0] in ("landing", "warehouse", "bulk")}
    assert len(ours) == 2 * len(SYNCED_RESOURCE_TYPES) + 5 + 2


def test_full_resync_sets_full_on_every_landing_op() -> None:
    full = defs.resolve_job_def("full_resync")
    incremental = defs.resolve_job_def("incremental_sync")
    assert full.partitioned_config is not None
    ops = full.partitioned_config.get_run_config_for_partition_key("any-connection")["ops"]
    assert {name: cfg["config"]["full"] for name, cfg in ops.items()} == {f"landing__{t}": True for t in PATIENT_TYPES}
    assert incremental.partitioned_config is not None
    assert not incremental.partitioned_config.get_run_config_for_partition_key("any-connection")
    assert full.executor_def.name == incremental.executor_def.name == "in_process"


def test_resources_follow_the_environment(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(tmp_path), "EHRSYNC_SYNC_WINDOWS": '{"epic": "22:00-06:00"}'}
    )
    built = build_definitions(settings)
    resources = built.resources or {}
    assert resources["warehouse"].target == str(tmp_path.resolve() / "warehouse.duckdb")
    assert resources["policy"].sync_windows == '{"epic": "22:00-06:00"}'


def test_workspace_yaml_loads_the_definitions_module() -> None:
    workspace = yaml.safe_load(WORKSPACE_YAML.read_text())
    assert workspace == {"load_from": [{"python_module": "pipelines.definitions"}]}


def test_shipped_dagster_yaml_makes_a_valid_instance_with_per_source_limits(tmp_path: Path) -> None:
    home = prepare_dagster_home(tmp_path / "dagster_home")
    assert (home / "dagster.yaml").read_bytes() == SHIPPED_DAGSTER_YAML.read_bytes()
    with DagsterInstance.from_config(str(home)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert instance.run_monitoring_enabled
    assert queue is not None
    assert queue.max_concurrent_runs == 4
    limits = queue.tag_concurrency_limits
    by_key = {limit["key"]: limit for limit in limits}
    assert by_key["ehrsync/source"]["limit"] == 2
    assert by_key["ehrsync/source"]["value"] == {"applyLimitPerUniqueValue": True}
    assert by_key["ehrsync/connection"]["limit"] == 1


def test_ui_command_points_dagster_at_the_state_dir(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)})
    argv, env = ui_command(settings, port=3999)
    assert argv[1:4] == ["-m", "dagster", "dev"]
    assert argv[4:6] == ["-m", "pipelines.definitions"] and "3999" in argv  # the module workspace.yaml loads
    assert env["DAGSTER_HOME"] == str(tmp_path.resolve() / "dagster_home")
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()


def _documented_types(name: str) -> list[str]:
    """The types docs/PIPELINES.md lists after ``engine.<name>`` (in parentheses, over one or more lines)."""
    text = " ".join((ROOT / "docs" / "PIPELINES.md").read_text(encoding="utf-8").split())
    match = re.search(rf"`engine\.{name}` \(([^)]*)\)", text)
    assert match, f"docs/PIPELINES.md does not list engine.{name}"
    return [t.strip() for t in match.group(1).split(",")]


def test_the_synced_types_are_the_ones_pipelines_md_promises() -> None:
    """The product's type list against what the docs promise analysts (an edit to either must edit both)."""
    assert _documented_types("PATIENT_TYPES") == list(PATIENT_TYPES)
    assert _documented_types("REFERENCED_TYPES") == list(REFERENCED_TYPES)
