"""``run_sync_now``: sync one connection now, in this process, recorded on the Dagster instance.

The composition root (``ehrsync sync CONNECTION [--full]``, ``make demo``) calls this; the run is the same job
the sensors would launch, so it appears in the UI with its materializations and checks afterwards.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, JobDefinition

from ehrsync.dagster_instance import open_instance
from engine import ConnectionNotSyncableError
from engine.connection_snapshots import ConnectionSnapshot, read_connection
from engine.errors import PipelineRunError
from engine.run_outcome import finish_sync_run
from engine.run_tags import run_tags
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions
from pipelines.defs._shared.partitions import CONNECTIONS_PARTITIONS_NAME
from pipelines.defs._shared.run_control import run_times
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB
from pipelines.defs.maintenance.jobs import RECONCILE_JOB
from pipelines.defs.sync.jobs import FULL_RESYNC_JOB, INCREMENTAL_SYNC_JOB
from store import AppDatabase

__all__ = ["SyncNowResult", "job_for", "run_reconcile_now", "run_sync_now"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncNowResult:
    """What one in-process run did: per asset its metadata, per check whether it passed."""

    run_id: str
    job_name: str
    connection_id: str
    success: bool
    materializations: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    failed_steps: tuple[str, ...] = ()


def job_for(*, is_bulk: bool, full: bool) -> str:
    """Backend/group connections export in bulk; patients sync by REST, in full when asked."""
    if is_bulk:
        return BULK_EXPORT_JOB
    return FULL_RESYNC_JOB if full else INCREMENTAL_SYNC_JOB


def run_sync_now(
    connection_id: str,
    full: bool = False,
    *,
    settings: PipelineSettings | None = None,
    instance: DagsterInstance | None = None,
    console_log_level: str | None = None,
) -> SyncNowResult:
    """Materialize the connection's sync job for its partition now and wait for it.

    Raises ``ConnectionNotFoundError`` / ``ConnectionNotSyncableError`` when the connection cannot sync; a
    failing step does not raise: ``success`` is False and ``failed_steps`` names them (details in the UI).
    """
    resolved = settings or PipelineSettings.from_env()
    with ExitStack() as cleanup:
        db = AppDatabase.from_url(resolved.database_url)
        cleanup.callback(db.dispose)
        conn = read_connection(db, connection_id)
        if not conn.syncable:
            raise ConnectionNotSyncableError(f"connection {connection_id} is {conn.status}, not active")
        dagster = instance or cleanup.enter_context(open_instance(resolved))
        job_name = job_for(is_bulk=conn.is_bulk, full=full)
        result = _execute_for_connection(dagster, resolved, job_name, conn, console_log_level)
        failed = tuple(sorted(result.get_failed_step_keys()))
        error = f"failed steps: {', '.join(failed)}" if failed else None
        times = run_times(dagster, result.run_id)
        finish_sync_run(db, result.run_id, connection_id, succeeded=result.success, error=error, times=times)
    materializations: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        materializations[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}
    return SyncNowResult(
        run_id=result.run_id,
        job_name=job_name,
        connection_id=connection_id,
        success=result.success,
        materializations=materializations,
        checks=checks,
        failed_steps=failed,
    )


def run_reconcile_now(
    connection_id: str,
    *,
    settings: PipelineSettings | None = None,
    instance: DagsterInstance | None = None,
    console_log_level: str | None = None,
) -> int:
    """Run deletion reconciliation (BDX-31) for one patient connection now; returns the rows tombstoned.

    Same job the weekly schedule runs, so it is recorded on the instance. Raises ``ConnectionNotSyncableError``
    for a bulk or inactive connection and ``PipelineRunError`` when the run fails.
    """
    resolved = settings or PipelineSettings.from_env()
    with ExitStack() as cleanup:
        db = AppDatabase.from_url(resolved.database_url)
        cleanup.callback(db.dispose)
        conn = read_connection(db, connection_id)
        if not conn.syncable or conn.is_bulk:
            raise ConnectionNotSyncableError(
                f"connection {connection_id} cannot be reconciled by REST ({conn.status}, bulk={conn.is_bulk})"
            )
        dagster = instance or cleanup.enter_context(open_instance(resolved))
        result = _execute_for_connection(dagster, resolved, RECONCILE_JOB, conn, console_log_level)
        if not result.success:
            raise PipelineRunError(f"reconciliation run {result.run_id} of {connection_id} failed")
        deleted: dict[str, int] = result.output_for_node("reconcile_connection")
        return sum(deleted.values())


def _execute_for_connection(
    dagster: DagsterInstance,
    settings: PipelineSettings,
    job_name: str,
    conn: ConnectionSnapshot,
    console_log_level: str | None,
) -> ExecuteInProcessResult:
    """Run ``job_name`` for the connection's partition in this process, tagged like a sensor-launched run."""
    if not dagster.has_dynamic_partition(CONNECTIONS_PARTITIONS_NAME, conn.id):
        dagster.add_dynamic_partitions(CONNECTIONS_PARTITIONS_NAME, [conn.id])
    job = build_definitions(settings).resolve_job_def(job_name)
    tags = run_tags(connection_id=conn.id, tenant_id=conn.tenant_id, source=conn.provider_id, trigger="manual")
    logger.info("running %s for connection %s", job_name, conn.id)
    return job.execute_in_process(
        partition_key=conn.id,
        instance=dagster,
        tags=tags,
        raise_on_error=False,
        run_config=_run_config(job, conn.id, console_log_level),
    )


def _run_config(job: JobDefinition, partition_key: str, console_log_level: str | None) -> dict[str, Any] | None:
    """The job's own config for the partition, plus a quieter console logger when asked.

    The demo prints its own progress; every event still reaches the instance (and the UI) whatever the level.
    """
    if console_log_level is None:
        return None
    config = dict(job.get_run_config_for_partition_key(partition_key) or {})
    config["loggers"] = {"console": {"config": {"log_level": console_log_level.upper()}}}
    return config
