"""``deploy/dagster.yaml`` on a real PostgreSQL: which driver its storage URL must name, that its run queue keeps
the limits ehrsync ships for one machine, and that ``ehrsync ui`` opens the instance without touching the file."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import sqlalchemy.exc
import yaml
from dagster import DagsterInstance
from dagster._core.run_coordinator import QueuedRunCoordinator

from ehrsync.dagster_instance import INSTALLED_MARK, SHIPPED_DAGSTER_YAML
from pipelines.defs.maintenance.run_retention import run_retention_job
from tests.deploy.graphql import runs
from tests.deploy.processes import DEPLOY, Processes, free_port, wait_for


def test_the_storage_needs_the_psycopg2_scheme_a_bare_postgresql_url_breaks_the_event_log(pg_home: Path) -> None:
    """SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which binds ``NOTIFY run_events, $1`` server-side:
    the first event of the first run fails. The shipped file names ``postgresql+psycopg2`` and runs a real job."""
    shipped = (DEPLOY / "dagster.yaml").read_text()
    assert "scheme: postgresql+psycopg2" in shipped
    prune = run_retention_job(30)
    with DagsterInstance.from_config(str(pg_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = prune.execute_in_process(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None
        assert instance.all_logs(result.run_id)

    (pg_home / "dagster.yaml").write_text(shipped.replace("scheme: postgresql+psycopg2", "scheme: postgresql"))
    with (
        DagsterInstance.from_config(str(pg_home)) as instance,
        pytest.raises(sqlalchemy.exc.ProgrammingError, match=r"NOTIFY run_events"),
    ):
        prune.execute_in_process(instance=instance)


def _limits(run_queue: dict[str, object]) -> tuple[object, object]:
    return run_queue["max_concurrent_runs"], run_queue["tag_concurrency_limits"]


def test_the_run_queue_limits_per_source_connection_and_export_slot_are_the_ones_shipped_for_one_machine(
    pg_home: Path,
) -> None:
    shipped = yaml.safe_load(SHIPPED_DAGSTER_YAML.read_text())["concurrency"]["runs"]
    deploy = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_coordinator"]["config"]
    assert _limits(deploy) == _limits(shipped)
    with DagsterInstance.from_config(str(pg_home)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        limits = {limit["key"]: limit for limit in coordinator.get_run_queue_config().tag_concurrency_limits}
        assert limits["ehrsync/source"]["limit"] == 2 and limits["ehrsync/connection"]["limit"] == 1
        assert limits["ehrsync/connection"]["value"] == {"applyLimitPerUniqueValue": True}
        # Oracle Health: one Bulk export per client and tenant (only runs of such vendors carry the tag)
        slot = limits["ehrsync/export_slot"]
        assert slot["limit"] == 1 and slot["value"] == {"applyLimitPerUniqueValue": True}


def test_ehrsync_ui_opens_the_postgres_instance_and_leaves_the_operators_dagster_yaml_alone(
    tmp_path: Path, pg_home: Path
) -> None:
    """An operator's DAGSTER_HOME holds deploy/dagster.yaml: ``ehrsync ui`` serves the runs stored in PostgreSQL
    (a run made before it started shows up through its GraphQL API) and writes neither the file nor a mark."""
    before = (pg_home / "dagster.yaml").read_bytes()
    with DagsterInstance.from_config(str(pg_home)) as instance:
        earlier = run_retention_job(30).execute_in_process(instance=instance)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WAREHOUSE_URL")}
    procs = Processes(tmp_path)
    try:
        ui = procs.start(
            "ehrsync-ui",
            ["python", "-m", "ehrsync.cli", "ui", "--state", str(tmp_path / "state"), "--port", str(port)],
            env,
        )
        graphql = f"http://127.0.0.1:{port}/graphql"
        found = wait_for(
            "the UI to list the run stored in PostgreSQL",
            lambda: [r for r in runs(graphql) if r.run_id == earlier.run_id],
            procs,
            timeout_s=150,
            every_s=2,
        )
        assert found[0].status == "SUCCESS" and found[0].job_name == "prune_dagster_runs"
        assert httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).is_success
    finally:
        procs.stop_all()
    assert ui.wait(timeout=60) is not None  # ehrsync ui itself ended too
    assert (pg_home / "dagster.yaml").read_bytes() == before
    assert not (pg_home / INSTALLED_MARK).exists()
