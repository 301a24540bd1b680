"""The analyst views through the real ``analyst_views`` job, in-process: one asset per view downstream of the
warehouse and bulk assets, row counts, column schema and snapshot paths as metadata, and the patient reference
check passing and failing; on DuckDB (snapshot published) and PostgreSQL (live views, no snapshot)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, TableSchema

from ehrsync.run_analyst import run_analyst_views_now
from engine import PATIENT_TYPES, REFERENCED_TYPES
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs.analyst.assets import ANALYST_GROUP, CHECKED_VIEWS, PATIENT_REFERENCES_CHECK, analyst_key
from pipelines.defs.bulk.assets import BULK_EXPORT_KEY
from pipelines.defs.sync.type_assets import warehouse_key
from tests.warehouse.conftest import land, resource
from warehouse import VIEW_NAMES, LandingZone, open_warehouse


@pytest.fixture
def zone(tmp_path: Path) -> LandingZone:
    return LandingZone(tmp_path / "landing")


def _fill(target: str, zone: LandingZone) -> None:
    """Patient p1 with an observation and an encounter; a condition whose patient was never synced."""
    with open_warehouse(target) as wh:
        wh.upsert(land(zone, [resource("p1", resource_type="Patient")], resource_type="Patient", run_id="a"))
        obs = [resource(f"o{i}", subject={"reference": "Patient/p1"}) for i in range(3)]
        wh.upsert(land(zone, obs, run_id="b"))
        enc = resource("e1", resource_type="Encounter", subject={"reference": "Patient/p1"})
        wh.upsert(land(zone, [enc], resource_type="Encounter", run_id="c"))
        cond = resource("cond1", resource_type="Condition", subject={"reference": "Patient/p404"})
        wh.upsert(land(zone, [cond], resource_type="Condition", run_id="d"))


def _settings(tmp_path: Path, warehouse_url: str | None = None) -> PipelineSettings:
    env = {"EHRSYNC_STATE_DIR": str(tmp_path / "state"), "EHRSYNC_ANALYST_GENERATIONS": "2"}
    if warehouse_url:
        env["WAREHOUSE_URL"] = warehouse_url
    return PipelineSettings.from_env(env)


def test_one_asset_per_view_downstream_of_every_warehouse_asset(tmp_path: Path) -> None:
    graph = build_definitions(_settings(tmp_path)).resolve_asset_graph()
    upstream = {warehouse_key(t) for t in (*PATIENT_TYPES, *REFERENCED_TYPES)} | {BULK_EXPORT_KEY}
    assert graph.get_all_asset_keys() >= upstream  # the keys named are real assets
    for view in VIEW_NAMES:
        node = graph.get(analyst_key(view))
        assert node.group_name == ANALYST_GROUP and node.owners and node.partitions_def is None
        assert set(node.parent_keys) == upstream
    checked = {key.asset_key for key in graph.asset_check_keys if key.name == PATIENT_REFERENCES_CHECK}
    assert checked == {analyst_key(v) for v in CHECKED_VIEWS}
    assert set(CHECKED_VIEWS) == {"observation", "condition", "encounter"}


def test_the_job_refreshes_publishes_and_checks_on_duckdb(
    tmp_path: Path, zone: LandingZone, dagster_instance: DagsterInstance
) -> None:
    settings = _settings(tmp_path)
    _fill(settings.warehouse_url, zone)
    results = [run_analyst_views_now(settings=settings, instance=dagster_instance) for _ in range(3)]
    result = results[-1]
    assert all(r.success for r in results) and set(result.tables) == set(VIEW_NAMES)
    observation = result.tables["observation"]
    assert observation["dagster/row_count"] == 3 and observation["dagster/table_name"] == "observation"
    schema = observation["dagster/column_schema"]
    assert isinstance(schema, TableSchema) and "patient_id" in {c.name for c in schema.columns}
    current = Path(str(result.current))
    assert current == settings.state_dir / "analyst" / "current" / "analyst.duckdb"
    assert current.resolve() == Path(str(result.snapshot)).resolve()
    assert len(list((settings.state_dir / "analyst" / "generations").iterdir())) == 2  # EHRSYNC_ANALYST_GENERATIONS
    with duckdb.connect(str(current), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM observation").fetchone() == (3,)
        # the write-back outbox rides along (empty before any note) so analysts never need the live file
        assert con.execute("SELECT count(*) FROM draft_note_outbox").fetchone() == (0,)
    assert Path(str(observation["parquet"])).is_file()
    assert (current.parent / "draft_note_outbox.parquet").is_file()
    assert result.checks == {
        f"analyst/observation:{PATIENT_REFERENCES_CHECK}": True,
        f"analyst/encounter:{PATIENT_REFERENCES_CHECK}": True,
        f"analyst/condition:{PATIENT_REFERENCES_CHECK}": False,
    }
    failed = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [
            k
            for k in build_definitions(settings).resolve_asset_graph().asset_check_keys
            if k.name == PATIENT_REFERENCES_CHECK
        ]
    )
    evaluation = next(v for k, v in failed.items() if k.asset_key == analyst_key("condition")).event
    assert evaluation is not None
    metadata = evaluation.dagster_event.asset_check_evaluation_data.metadata  # type: ignore[union-attr]
    assert metadata["dangling_patient_reference"].value == 1 and metadata["example_ids"].value == ["cond1"]


@pytest.mark.postgres
def test_the_job_refreshes_live_views_on_postgres(
    tmp_path: Path, zone: LandingZone, dagster_instance: DagsterInstance, postgres_url: str
) -> None:
    settings = _settings(tmp_path, postgres_url)
    _fill(postgres_url, zone)
    first = run_analyst_views_now(settings=settings, instance=dagster_instance)
    second = run_analyst_views_now(settings=settings, instance=dagster_instance)
    assert first.success and second.success
    assert first.tables["observation"]["recreated"] is True and second.tables["observation"]["recreated"] is False
    assert second.tables["observation"]["dagster/row_count"] == 3
    assert second.snapshot is None and not (settings.state_dir / "analyst").exists()
    assert second.checks[f"analyst/condition:{PATIENT_REFERENCES_CHECK}"] is False
