"""The per-resource-type assets, built by one factory from one type list.

``landing/<Type>`` searches the EHR (or, for referenced types, reads the ids this run's clinical data points
at) and lands Parquet; ``warehouse/<Type>`` upserts that landing. Both are partitioned by connection and
return ``MaterializeResult`` metadata (counts, bytes, pages, duration, the new high-water mark) so the UI
tells what each run did. A type the patient did not grant materializes as skipped, not failed.
"""

from collections.abc import Sequence

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from pipelines.connections import read_connection
from pipelines.partitions import connections_partitions
from pipelines.reference_landing import land_referenced_type, references_of_type
from pipelines.reporting import (
    check_result,
    duplicate_keys_verdict,
    quarantine_verdict,
    type_report_metadata,
)
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
    sync_environment,
)
from pipelines.run_events import REFERENCES, run_references, skipped_reason
from pipelines.sync import (
    PATIENT_TYPES,
    REFERENCED_TYPES,
    NothingLandedError,
    SyncEnvironment,
    TypeReport,
    land_resource_type,
    runs,
    upsert_resource_type,
)
from pipelines.sync.incremental import pending_references

__all__ = [
    "DUPLICATE_CHECK",
    "LANDING_GROUP",
    "QUARANTINE_CHECK",
    "RESOURCE_TYPES",
    "WAREHOUSE_GROUP",
    "LandingConfig",
    "build_type_assets",
    "landing_key",
    "landing_op_name",
    "warehouse_key",
]

LANDING_GROUP = "landing"
WAREHOUSE_GROUP = "warehouse"
QUARANTINE_CHECK = "quarantine_within_threshold"
DUPLICATE_CHECK = "no_duplicate_keys"

# The one list the factory builds from: patient-compartment types, then the types they reference.
RESOURCE_TYPES: tuple[str, ...] = (*PATIENT_TYPES, *REFERENCED_TYPES)


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


def _raise_if_failed(report: TypeReport, step: str) -> None:
    if report.error is not None:
        raise Failure(
            description=f"{step} of {report.resource_type} failed: {report.error}",
            metadata=type_report_metadata(report),
        )


def _land(
    context: AssetExecutionContext, env: SyncEnvironment, resource_type: str, full: bool
) -> tuple[TypeReport, list[str]]:
    """Land one type for the partition's connection; returns the report and the references it found."""
    connection_id = context.partition_key
    conn = read_connection(env.db, connection_id)
    runs.ensure_run(env.db, connection_id, context.run_id, "full" if full else "incremental", tenant_id=conn.tenant_id)
    if resource_type in REFERENCED_TYPES:
        ids = references_of_type(run_references(context.instance, context.run_id), resource_type)
        return land_referenced_type(env, connection_id, resource_type, context.run_id, ids), []
    report = land_resource_type(env, connection_id, resource_type, context.run_id, full=full)
    found = [] if report.skipped_reason else sorted(pending_references(env, connection_id, resource_type))
    return report, found


def _build_landing(resource_type: str, deps: Sequence[AssetKey]) -> AssetsDefinition:
    key = landing_key(resource_type)

    @asset(
        key=key,
        group_name=LANDING_GROUP,
        partitions_def=connections_partitions,
        deps=list(deps),
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
        with sync_environment(app_db, landing, warehouse, ehr_http) as env:
            report, references = _land(context, env, resource_type, config.full)
        _raise_if_failed(report, "landing")
        metadata = type_report_metadata(report)
        metadata["references_found"] = MetadataValue.int(len(references))
        if references:
            metadata[REFERENCES] = MetadataValue.json(references)
        context.log.info(
            "landed %s of connection %s: %d fetched, %d quarantined%s",
            resource_type,
            context.partition_key,
            report.fetched,
            report.quarantined,
            f" (skipped: {report.skipped_reason})" if report.skipped_reason else "",
        )
        verdict = quarantine_verdict(report.fetched, report.quarantined, policy.quarantine_max_ratio)
        return MaterializeResult(metadata=metadata, check_results=[check_result(QUARANTINE_CHECK, verdict)])

    return _landing


def _build_warehouse(resource_type: str) -> AssetsDefinition:
    key = warehouse_key(resource_type)

    @asset(
        key=key,
        group_name=WAREHOUSE_GROUP,
        partitions_def=connections_partitions,
        deps=[landing_key(resource_type)],
        kinds={"fhir", "sql"},
        description=f"{resource_type} rows upserted into fhir_resources (newer lastUpdated wins, BDX-24).",
        check_specs=[AssetCheckSpec(DUPLICATE_CHECK, asset=key, description="Live rows have distinct ids.")],
    )
    def _warehouse(
        context: AssetExecutionContext,
        app_db: AppDatabaseResource,
        landing: LandingZoneResource,
        warehouse: WarehouseResource,
        ehr_http: EhrHttpResource,
    ) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster needs the bare class with check specs
        connection_id = context.partition_key
        with sync_environment(app_db, landing, warehouse, ehr_http) as env:
            try:
                report = upsert_resource_type(env, connection_id, resource_type, context.run_id)
            except NothingLandedError:
                reason = skipped_reason(context.instance, context.run_id, landing_key(resource_type))
                if reason is None:
                    raise
                report = TypeReport(resource_type, skipped_reason=reason)
        _raise_if_failed(report, "upsert")
        with warehouse.open() as wh:
            live = sum(
                int(row.get("live", 0))
                for row in wh.summary()
                if row.get("connection_id") == connection_id and row.get("resource_type") == resource_type
            )
            distinct = len(wh.live_ids(connection_id, resource_type))
        metadata = type_report_metadata(report)
        metadata["live_rows"] = MetadataValue.int(live)
        verdict = duplicate_keys_verdict(live, distinct)
        return MaterializeResult(metadata=metadata, check_results=[check_result(DUPLICATE_CHECK, verdict)])

    return _warehouse


def build_type_assets(resource_types: Sequence[str] = RESOURCE_TYPES) -> list[AssetsDefinition]:
    """Landing and warehouse assets per type; referenced types land after every clinical landing."""
    clinical_landings = [landing_key(t) for t in resource_types if t not in REFERENCED_TYPES]
    built: list[AssetsDefinition] = []
    for resource_type in resource_types:
        deps = clinical_landings if resource_type in REFERENCED_TYPES else []
        built.append(_build_landing(resource_type, deps))
        built.append(_build_warehouse(resource_type))
    return built
