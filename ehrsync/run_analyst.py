"""``run_analyst_views_now``: refresh the analyst views now, in this process, with the real ``analyst_views`` job.

``ehrsync sync`` and ``ehrsync demo`` call it after their syncs (the sensor does the same for runs the daemon
launched), so the run is recorded on the instance and appears in the UI with its metadata and checks.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from ehrsync.dagster_instance import open_instance
from ehrsync.stop_signals import keep_sigterm
from engine.run_tags import TRIGGER_TAG
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs.analyst.sensors import ANALYST_VIEWS_JOB

__all__ = ["AnalystViewsResult", "run_analyst_views_now"]


@dataclass(frozen=True)
class AnalystViewsResult:
    """What the run did: per view its metadata (rows, columns, snapshot paths), per check whether it passed."""

    run_id: str
    success: bool
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    error: str | None = None

    @property
    def snapshot(self) -> str | None:
        """The published ``analyst.duckdb`` (DuckDB warehouses; None on PostgreSQL, whose views are live)."""
        return next((str(m["snapshot"]) for m in self.tables.values() if "snapshot" in m), None)

    @property
    def current(self) -> str | None:
        """The path analysts open: ``analyst/current/analyst.duckdb``, always the newest snapshot."""
        return next((str(m["current"]) for m in self.tables.values() if "current" in m), None)


def run_analyst_views_now(
    *,
    settings: PipelineSettings | None = None,
    instance: DagsterInstance | None = None,
    console_log_level: str | None = None,
) -> AnalystViewsResult:
    """Execute ``analyst_views`` and wait for it; a failing step does not raise (``success`` False, ``error``)."""
    resolved = settings or PipelineSettings.from_env()
    with ExitStack() as cleanup:
        dagster = instance or cleanup.enter_context(open_instance(resolved))
        job = build_definitions(resolved).resolve_job_def(ANALYST_VIEWS_JOB)
        config = None
        if console_log_level is not None:
            config = {"loggers": {"console": {"config": {"log_level": console_log_level.upper()}}}}
        with keep_sigterm():
            result = job.execute_in_process(
                instance=dagster, tags={TRIGGER_TAG: "manual"}, raise_on_error=False, run_config=config
            )
    tables: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        tables[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    return AnalystViewsResult(result.run_id, result.success, tables, checks, None if result.success else _error(result))


def _error(result: ExecuteInProcessResult) -> str:
    """The failed step's description (a ``Failure`` names the cause), in one line."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            described = data.user_failure_data.description if data.user_failure_data else None
            text = described or (data.error.message if data.error else "") or "failed"
            return text.strip().splitlines()[0]
    return "the run failed"
