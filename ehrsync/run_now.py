"""``run_sync_now``: sync one connection now, in this process, recorded on the Dagster instance.

The composition root (``ehrsync sync CONNECTION [--full]``, ``make demo``) calls this; the run is the same job
the sensors would launch, so it appears in the UI with its materializations and checks afterwards.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey, DagsterInstance, Definitions, EventLogEntry, ExecuteInProcessResult, JobDefinition

from ehrsync.dagster_instance import open_instance
from ehrsync.reconcile_result import ReconcileNowResult, unconfirmable_of
from ehrsync.stop_signals import keep_sigterm
from engine import REFERENCED_TYPES
from engine.batch_sync import batch_sync_run_id, close_batch_rows
from engine.connection_snapshots import ConnectionSnapshot, reconcilable_connection, syncable_connection
from engine.errors import PipelineRunError
from engine.run_outcome import finish_sync_run
from engine.run_tags import connection_run_tags
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions, domain_definitions
from pipelines.defs._shared.partitions import partitions_name_for
from pipelines.defs._shared.run_control import run_times
from pipelines.defs.bulk.assets import BULK_EXPORT_JOB
from pipelines.defs.maintenance.jobs import RECONCILE_JOB
from pipelines.defs.sync.batch import BATCH_SYNC_JOB, batch_run_config, batch_run_tags
from pipelines.defs.sync.jobs import FULL_RESYNC_JOB, INCREMENTAL_SYNC_JOB
from pipelines.defs.sync.type_assets import landing_key, landing_op_name, warehouse_key
from pipelines.resources import default_resources
from store import AppDatabase

__all__ = [
    "BatchNowResult",
    "ReconcileNowResult",
    "SyncNowResult",
    "job_for",
    "run_batch_now",
    "run_reconcile_now",
    "run_sync_now",
]

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
    step_errors: dict[str, str] = field(default_factory=dict)


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
    resource_types: Sequence[str] | None = None,
    resources: Mapping[str, object] | None = None,
    on_event: Callable[[EventLogEntry], None] | None = None,
) -> SyncNowResult:
    """Materialize the connection's sync job for its partition now and wait for it; close its ``sync_runs`` row.

    The row is closed by ``finish_sync_run`` from Dagster's verdict, as the run status sensors close a launched
    run: one rule decides a run's outcome wherever it ran. ``resource_types`` limits a REST job to those types'
    ``landing``/``warehouse`` assets (plus the referenced resources); ``resources`` replaces bound resources
    (tests give the EHR client a recorded transport and faster retries).
    ``on_event`` receives each of the run's events as it is stored (``ehrsync sync`` prints its progress from them).
    Raises ``ConnectionNotFoundError`` / ``ConnectionNotSyncableError`` when the connection cannot sync; a
    failing step does not raise: ``success`` is False, ``failed_steps`` names them and ``step_errors`` says why.
    """
    resolved = settings or PipelineSettings.from_env()
    with ExitStack() as cleanup:
        db = AppDatabase.from_url(resolved.database_url)
        cleanup.callback(db.dispose)
        conn = syncable_connection(db, connection_id)
        dagster = instance or cleanup.enter_context(open_instance(resolved))
        job_name = job_for(is_bulk=conn.is_bulk, full=full)
        selection = _RunSelection(console_log_level, resource_types, resources, on_event)
        result = _execute_for_connection(dagster, resolved, job_name, conn, selection)
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
        step_errors=_step_errors(result),
    )


@dataclass(frozen=True)
class BatchNowResult:
    """One in-process batch run: Dagster's verdict and, per member, its ``sync_runs`` id."""

    run_id: str
    success: bool
    sync_run_ids: dict[str, str]
    materializations: int


def run_batch_now(
    connection_ids: Sequence[str],
    source: str,
    *,
    settings: PipelineSettings | None = None,
    instance: DagsterInstance | None = None,
    resources: Mapping[str, object] | None = None,
    console_log_level: str | None = None,
) -> BatchNowResult:
    """Run ``incremental_sync_batch`` for these patient connections of ``source`` now, in this process.

    The job the scheduling sensor requests; members' rows are closed as the run-status sensor closes them.
    Each member's partition is added first, so its materializations land on a known partition."""
    resolved = settings or PipelineSettings.from_env()
    with ExitStack() as cleanup:
        db = AppDatabase.from_url(resolved.database_url)
        cleanup.callback(db.dispose)
        dagster = instance or cleanup.enter_context(open_instance(resolved))
        name = partitions_name_for(is_bulk=False)
        missing = [cid for cid in connection_ids if not dagster.has_dynamic_partition(name, cid)]
        if missing:
            dagster.add_dynamic_partitions(name, missing)
        job = _definitions(resolved, resources).resolve_job_def(BATCH_SYNC_JOB)
        config: dict[str, Any] = batch_run_config(list(connection_ids))
        if console_log_level is not None:
            config["loggers"] = {"console": {"config": {"log_level": console_log_level.upper()}}}
        with keep_sigterm():
            result = job.execute_in_process(
                run_config=config,
                instance=dagster,
                tags=batch_run_tags(source, len(connection_ids), "manual"),
                raise_on_error=False,
            )
        error = None if result.success else "batch run failed"
        times = run_times(dagster, result.run_id)
        close_batch_rows(db, result.run_id, connection_ids, succeeded=result.success, error=error, times=times)
    return BatchNowResult(
        run_id=result.run_id,
        success=result.success,
        sync_run_ids={cid: batch_sync_run_id(result.run_id, cid) for cid in connection_ids},
        materializations=len(result.get_asset_materialization_events()),
    )


def run_reconcile_now(
    connection_id: str,
    *,
    settings: PipelineSettings | None = None,
    instance: DagsterInstance | None = None,
    console_log_level: str | None = None,
) -> ReconcileNowResult:
    """Run deletion reconciliation (BDX-31) for one patient connection now.

    Same job the weekly schedule runs, so it is recorded on the instance. Raises ``ConnectionNotSyncableError``
    for a bulk or inactive connection and ``PipelineRunError`` when the run fails, naming why (the op's failure:
    the types not reconciled).
    """
    resolved = settings or PipelineSettings.from_env()
    with ExitStack() as cleanup:
        db = AppDatabase.from_url(resolved.database_url)
        cleanup.callback(db.dispose)
        conn = reconcilable_connection(db, connection_id)
        dagster = instance or cleanup.enter_context(open_instance(resolved))
        result = _execute_for_connection(dagster, resolved, RECONCILE_JOB, conn, _RunSelection(console_log_level))
        if not result.success:
            why = "; ".join(_step_errors(result).values()) or "no step ran"  # the types not reconciled, and why
            raise PipelineRunError(f"reconciliation run {result.run_id} of {connection_id} failed: {why}")
        deleted: dict[str, int] = result.output_for_node("reconcile_connection")
        return ReconcileNowResult(tombstoned=sum(deleted.values()), unconfirmable=unconfirmable_of(result))


@dataclass(frozen=True)
class _RunSelection:
    """What of the job runs, and with what: the console log level, a subset of REST types, replaced resources."""

    console_log_level: str | None = None
    resource_types: Sequence[str] | None = None
    resources: Mapping[str, object] | None = None
    on_event: Callable[[EventLogEntry], None] | None = None  # each event as stored (the CLI's progress)

    def asset_keys(self) -> list[AssetKey] | None:
        """The chosen types' landing and warehouse assets, plus the referenced resources they queue."""
        if self.resource_types is None:
            return None
        types = [*self.resource_types, *REFERENCED_TYPES]
        return [key for t in types for key in (landing_key(t), warehouse_key(t))]


def _execute_for_connection(
    dagster: DagsterInstance,
    settings: PipelineSettings,
    job_name: str,
    conn: ConnectionSnapshot,
    selection: _RunSelection,
) -> ExecuteInProcessResult:
    """Run ``job_name`` for the connection's partition in this process, tagged like a sensor-launched run."""
    partitions = partitions_name_for(is_bulk=conn.is_bulk)  # the set the job's assets are partitioned by
    if not dagster.has_dynamic_partition(partitions, conn.id):
        dagster.add_dynamic_partitions(partitions, [conn.id])
    job = _definitions(settings, selection.resources).resolve_job_def(job_name)
    tags = connection_run_tags(conn, "manual")
    logger.info("running %s for connection %s", job_name, conn.id)
    run_id = str(uuid.uuid4())  # chosen here so a listener follows the run from its first event
    if selection.on_event is not None:
        dagster.add_event_listener(run_id, selection.on_event)
    with keep_sigterm():
        return job.execute_in_process(
            run_id=run_id,
            partition_key=conn.id,
            instance=dagster,
            tags=tags,
            raise_on_error=False,
            run_config=_run_config(job, conn.id, selection),
            asset_selection=selection.asset_keys(),
        )


def _definitions(settings: PipelineSettings, resources: Mapping[str, object] | None) -> Definitions:
    """The code location's definitions; replaced resources are bound in place of the settings' own."""
    if not resources:
        return build_definitions(settings)
    return Definitions.merge(
        *domain_definitions(settings), Definitions(resources={**default_resources(settings), **resources})
    )


def _run_config(job: JobDefinition, partition_key: str, selection: _RunSelection) -> dict[str, Any] | None:
    """The job's own config for the partition (limited to the chosen types), plus a quieter console logger.

    The demo prints its own progress; every event still reaches the instance (and the UI) whatever the level.
    """
    if selection.console_log_level is None and selection.resource_types is None:
        return None
    config = dict(job.get_run_config_for_partition_key(partition_key) or {})
    if selection.resource_types is not None and "ops" in config:
        chosen = {landing_op_name(t) for t in selection.resource_types}
        config["ops"] = {op: op_config for op, op_config in config["ops"].items() if op in chosen}
    if selection.console_log_level is not None:
        config["loggers"] = {"console": {"config": {"log_level": selection.console_log_level.upper()}}}
    return config


def _step_errors(result: ExecuteInProcessResult) -> dict[str, str]:
    """Why each failed step failed, in one line: a ``Failure``'s description, else the step's own exception
    (Dagster wraps it in a ``DagsterExecutionStepExecutionError``; its cause is what the step raised)."""
    errors: dict[str, str] = {}
    for event in result.all_events:
        if not event.is_step_failure or event.step_key is None:
            continue
        data = event.step_failure_data
        error = data.error
        if error is not None and error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
            error = error.cause
        described = data.user_failure_data.description if data.user_failure_data else None
        text = described or (error.message if error is not None else "") or "failed"
        errors[event.step_key] = text.strip().splitlines()[0]
    return errors
