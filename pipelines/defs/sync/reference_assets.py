"""Practitioner, Organization, Location and Medication: read by id from what the patient's data references.

They are not in the patient compartment. Each upserted clinical type queues the references it found (in the
commit that completes it, so a crash loses none); one step then reads the queue and, per type, lands and
upserts what it found. It materializes ``landing/<Type>`` and ``warehouse/<Type>`` for each referenced type so
the groups read the same as for clinical types. A type that fails keeps its references queued for next time.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    Failure,
    MaterializeResult,
    multi_asset,
)

from engine import PATIENT_TYPES, REFERENCED_TYPES, TypeReport, runs, sync_references
from engine.run_holds import note_source_throttle
from pipelines.defs._shared.connection_facts import connection_metadata, step_connection
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs._shared.metadata import check_result, quarantine_verdict, type_report_metadata
from pipelines.defs._shared.partitions import patient_connections_partitions
from pipelines.defs._shared.run_control import earlier_runs
from pipelines.defs._shared.tables import (
    ASSET_OWNERS,
    fhir_resources_metadata,
    landing_metadata,
    row_count,
    stored_rows,
)
from pipelines.defs.sync.type_assets import (
    DUPLICATE_CHECK,
    LANDING_GROUP,
    QUARANTINE_CHECK,
    WAREHOUSE_GROUP,
    duplicate_check,
    landing_key,
    warehouse_key,
)
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)

__all__ = ["NO_REFERENCES", "REFERENCES_STEP", "build_reference_assets"]

NO_REFERENCES = "no_references"
REFERENCES_STEP = "referenced_resources"


def _specs() -> list[AssetSpec]:
    clinical = [warehouse_key(t) for t in PATIENT_TYPES]
    specs: list[AssetSpec] = []
    for resource_type in REFERENCED_TYPES:
        specs.append(
            AssetSpec(
                landing_key(resource_type),
                group_name=LANDING_GROUP,
                owners=ASSET_OWNERS,
                metadata=landing_metadata(resource_type),
                deps=clinical,
                kinds={"fhir", "parquet"},
                skippable=True,
                description=f"{resource_type} resources the patient's data references, read by id and landed.",
            )
        )
        specs.append(
            AssetSpec(
                warehouse_key(resource_type),
                group_name=WAREHOUSE_GROUP,
                owners=ASSET_OWNERS,
                metadata=fhir_resources_metadata(),
                deps=[landing_key(resource_type)],
                kinds={"fhir", "sql"},
                skippable=True,
                description=f"Referenced {resource_type} rows upserted into fhir_resources.",
            )
        )
    return specs


def _check_specs() -> list[AssetCheckSpec]:
    checks: list[AssetCheckSpec] = []
    for resource_type in REFERENCED_TYPES:
        checks.append(AssetCheckSpec(QUARANTINE_CHECK, asset=landing_key(resource_type)))
        checks.append(AssetCheckSpec(DUPLICATE_CHECK, asset=warehouse_key(resource_type)))
    return checks


def build_reference_assets() -> AssetsDefinition:
    @multi_asset(
        name=REFERENCES_STEP,
        specs=_specs(),
        check_specs=_check_specs(),
        partitions_def=patient_connections_partitions,
        description="Reads the queued references of this connection; lands and upserts them per type.",
    )
    def _references(
        context: AssetExecutionContext,
        app_db: AppDatabaseResource,
        landing: LandingZoneResource,
        warehouse: WarehouseResource,
        ehr_http: EhrHttpResource,
        policy: SyncPolicyResource,
    ) -> Iterator[MaterializeResult]:  # type: ignore[type-arg]  # Dagster needs the bare class with check specs
        connection_id = context.partition_key
        with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
            who = connection_metadata(step_connection(env.db, connection_id, bulk=False))
            earlier = earlier_runs(context.instance, context.run)
            if earlier:  # a re-execution of this step alone: its own row, so its success is recorded
                runs.continue_run(env.db, connection_id, context.run.run_id, earlier)
            try:
                reports = sync_references(env, connection_id, context.run.run_id)
            except Exception as exc:  # a source-wide throttle holds the run's retries, as a type step's does
                note_source_throttle(env.db, context.run.run_id, connection_id, exc)
                raise
        failed = [r for r in reports.values() if r.error is not None]
        for resource_type in REFERENCED_TYPES:
            report = reports.get(resource_type) or TypeReport(resource_type, skipped_reason=NO_REFERENCES)
            if report.error is not None:
                continue
            metadata = {**type_report_metadata(report), **who}
            quarantine = quarantine_verdict(report.fetched, report.quarantined, policy.quarantine_max_ratio)
            yield MaterializeResult(
                asset_key=landing_key(resource_type),
                metadata={**metadata, **row_count(max(report.fetched - report.quarantined, 0))},
                check_results=[check_result(QUARANTINE_CHECK, quarantine, landing_key(resource_type))],
            )
            live, duplicates = duplicate_check(warehouse, connection_id, resource_type)
            yield MaterializeResult(
                asset_key=warehouse_key(resource_type),
                metadata={**metadata, **stored_rows(live)},
                check_results=[check_result(DUPLICATE_CHECK, duplicates, warehouse_key(resource_type))],
            )
        if failed:
            summary = "; ".join(f"{r.resource_type}: {r.error}" for r in failed)
            raise Failure(description=f"reading references failed (they stay queued): {summary}")

    return _references
