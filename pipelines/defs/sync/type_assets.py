"""The per-resource-type assets, built by one factory from one type list.

``landing/<Type>`` searches the patient's compartment and lands Parquet; ``warehouse/<Type>`` upserts that
landing and moves the high-water mark. Both are partitioned by connection and return ``MaterializeResult``
metadata (counts, bytes, pages, duration, the new mark) so the UI tells what each run did. A type the
patient did not grant materializes as skipped, not failed. Referenced types live in ``reference_assets``.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    DagsterRun,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from engine import PATIENT_TYPES, TypeReport, hold_connection, land_resource_type, upsert_resource_type
from engine.connection_snapshots import ConnectionSnapshot
from engine.run_holds import note_source_throttle
from pipelines.defs._shared.connection_facts import connection_metadata, step_connection
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs._shared.lock_stops import stop_if_lock_waited_out
from pipelines.defs._shared.metadata import (
    CheckVerdict,
    check_result,
    duplicate_keys_verdict,
    quarantine_verdict,
    type_report_metadata,
)
from pipelines.defs._shared.partitions import patient_connections_partitions
from pipelines.defs._shared.run_control import earlier_runs
from pipelines.defs._shared.source_hold import stop_if_held
from pipelines.defs._shared.tables import (
    ASSET_OWNERS,
    fhir_resources_metadata,
    landing_metadata,
    row_count,
    stored_rows,
)
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)
from warehouse import WarehouseError

__all__ = [
    "DUPLICATE_CHECK",
    "LANDING_GROUP",
    "QUARANTINE_CHECK",
    "WAREHOUSE_GROUP",
    "LandingConfig",
    "build_type_assets",
    "duplicate_check",
    "landing_key",
    "landing_op_name",
    "raise_if_failed",
    "selected_types",
    "warehouse_key",
]

LANDING_GROUP = "landing"
WAREHOUSE_GROUP = "warehouse"
QUARANTINE_CHECK = "quarantine_within_threshold"
DUPLICATE_CHECK = "no_duplicate_keys"


class LandingConfig(Config):
    """Run config of a landing asset; the ``full_resync`` job sets ``full``."""

    full: bool = Field(default=False, description="Ignore the stored high-water mark and fetch everything.")


def landing_key(resource_type: str) -> AssetKey:
    return AssetKey([LANDING_GROUP, resource_type])


def warehouse_key(resource_type: str) -> AssetKey:
    return AssetKey([WAREHOUSE_GROUP, resource_type])


def landing_op_name(resource_type: str) -> str:
    """The op name Dagster derives from ``landing/<Type>`` (run config is keyed by it)."""
    return f"{LANDING_GROUP}__{resource_type}"


def selected_types(run: DagsterRun) -> list[str] | None:
    """The types whose landing a run was asked for (an asset selection in the UI, ``run_sync_now``'s
    ``resource_types``); None: every type. A full run forgets the marks of these types only."""
    chosen = run.asset_selection
    if chosen is None:
        return None
    return sorted(key.path[-1] for key in chosen if len(key.path) == 2 and key.path[0] == LANDING_GROUP)


def raise_if_failed(report: TypeReport, step: str) -> None:
    """A report carrying an error fails the step, with the counts so far as metadata."""
    if report.error is not None:
        raise Failure(
            description=f"{step} of {report.resource_type} failed: {report.error}",
            metadata=type_report_metadata(report),
        )


def step_metadata(
    context: AssetExecutionContext, report: TypeReport, conn: ConnectionSnapshot
) -> dict[str, MetadataValue]:
    """What a type step's materialization tells: the report's counts, ``incomplete``/``warnings`` (a searchset that
    stopped early, how it was recovered; logged too) and who the partition is."""
    metadata = type_report_metadata(report)
    if report.warnings or report.incomplete:
        metadata["incomplete"] = MetadataValue.bool(report.incomplete)
        metadata["warnings"] = MetadataValue.json(list(report.warnings))
        for warning in report.warnings:
            context.log.warning("%s: %s", report.resource_type, warning)
    metadata.update(connection_metadata(conn))
    return metadata


def duplicate_check(
    warehouse: WarehouseResource, connection_id: str, resource_type: str | None = None
) -> tuple[int | None, CheckVerdict]:
    """(live rows, verdict): every stored row of the connection (one type, or all) has its own key (BDX-24).

    The data is already committed: a warehouse that cannot be read now (another writer holding DuckDB past the
    lock timeout) fails this check with the reason, never the materialization."""
    try:
        with warehouse.open(read_only=True) as wh:
            counts = wh.key_counts(connection_id, resource_type)
    except WarehouseError as exc:
        return None, CheckVerdict(False, f"could not count keys: {exc}", {"error": type(exc).__name__})
    return counts.live, duplicate_keys_verdict(counts.rows, counts.keys)


def _build_landing(resource_type: str) -> AssetsDefinition:
    key = landing_key(resource_type)

    @asset(
        key=key,
        group_name=LANDING_GROUP,
        partitions_def=patient_connections_partitions,
        owners=ASSET_OWNERS,
        metadata=landing_metadata(resource_type),
        kinds={"fhir", "parquet"},
        description=f"{resource_type} resources changed since the high-water mark, landed as Parquet.",
        check_specs=[AssetCheckSpec(QUARANTINE_CHECK, asset=key, description="Quarantined lines within threshold.")],
    )
    def _landing(
        context: AssetExecutionContext,
        config: LandingConfig,
        app_db: AppDatabaseResource,
        landing: LandingZoneResource,
        warehouse: WarehouseResource,
        ehr_http: EhrHttpResource,
        policy: SyncPolicyResource,
    ) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster needs the bare class with check specs
        connection_id = context.partition_key
        with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
            conn = step_connection(env.db, connection_id, bulk=False)
            held_at = datetime.now(UTC)
            stop_if_held(context.instance, context.run, env.db, connection_id, f"landing {resource_type}", held_at)
            stop_if_lock_waited_out(context.instance, context.run.run_id, f"landing {resource_type} of {connection_id}")
            with hold_connection(env, connection_id, context.run.run_id):  # one sync of a connection at a time
                earlier = earlier_runs(context.instance, context.run) if config.full else ()
                try:
                    report = land_resource_type(
                        env,
                        connection_id,
                        resource_type,
                        context.run.run_id,
                        full=config.full,
                        earlier_runs=earlier,
                        full_types=selected_types(context.run),  # a limited full run forgets only theirs
                    )
                except Exception as exc:  # a source-wide throttle holds the run's later steps and its retries
                    note_source_throttle(env.db, context.run.run_id, connection_id, exc)
                    raise
        if not report.incomplete:  # an incomplete search fails the upsert step, after it stored what arrived
            raise_if_failed(report, "landing")
        context.log.info(
            "landed %s of connection %s: %d fetched, %d quarantined%s",
            resource_type,
            connection_id,
            report.fetched,
            report.quarantined,
            f" (skipped: {report.skipped_reason})" if report.skipped_reason else "",
        )
        verdict = quarantine_verdict(report.fetched, report.quarantined, policy.quarantine_max_ratio)
        metadata = step_metadata(context, report, conn)
        metadata.update(row_count(max(report.fetched - report.quarantined, 0)))  # rows landed by this run
        return MaterializeResult(metadata=metadata, check_results=[check_result(QUARANTINE_CHECK, verdict)])

    return _landing


def _build_warehouse(resource_type: str) -> AssetsDefinition:
    key = warehouse_key(resource_type)

    @asset(
        key=key,
        group_name=WAREHOUSE_GROUP,
        partitions_def=patient_connections_partitions,
        owners=ASSET_OWNERS,
        metadata=fhir_resources_metadata(),
        deps=[landing_key(resource_type)],
        kinds={"fhir", "sql"},
        description=f"{resource_type} rows upserted into fhir_resources (newer lastUpdated wins, BDX-24).",
        check_specs=[AssetCheckSpec(DUPLICATE_CHECK, asset=key, description="Every stored row has its own key.")],
    )
    def _warehouse(
        context: AssetExecutionContext,
        app_db: AppDatabaseResource,
        landing: LandingZoneResource,
        warehouse: WarehouseResource,
        ehr_http: EhrHttpResource,
        policy: SyncPolicyResource,
    ) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster needs the bare class with check specs
        connection_id = context.partition_key
        with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
            conn = step_connection(env.db, connection_id, bulk=False)
            with hold_connection(env, connection_id, context.run.run_id):
                earlier = earlier_runs(context.instance, context.run)  # a re-execution takes over their landing
                report = upsert_resource_type(
                    env, connection_id, resource_type, context.run.run_id, earlier_runs=earlier
                )
        raise_if_failed(report, "upsert")
        live, verdict = duplicate_check(warehouse, connection_id, resource_type)
        metadata = step_metadata(context, report, conn)
        metadata.update(stored_rows(live))  # rows of this connection and type stored now (tombstones not counted)
        return MaterializeResult(metadata=metadata, check_results=[check_result(DUPLICATE_CHECK, verdict)])

    return _warehouse


def build_type_assets(resource_types: Sequence[str] = PATIENT_TYPES) -> list[AssetsDefinition]:
    """A landing and a warehouse asset for each patient-compartment type."""
    built: list[AssetsDefinition] = []
    for resource_type in resource_types:
        built.append(_build_landing(resource_type))
        built.append(_build_warehouse(resource_type))
    return built
