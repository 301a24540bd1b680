"""Bulk ``$export`` for backend-services and group connections: one asset per connection partition.

The engine (``engine.run_bulk_export``) saves the export before its first poll, so a restarted run
resumes it; this layer logs its progress, turns its report into metadata, and checks every file's line count
against the manifest (BDX-20). Errors the server reported in the manifest's error files fail two checks: the
blocking ``export_complete`` when a type was not exported (BDX-22), and the non-blocking ``no_server_errors``
whenever an OperationOutcome has severity error or fatal (the run still succeeds when every type arrived).
"""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
    in_process_executor,
)

from engine import hold_connection, run_bulk_export
from engine.bulk_file_counts import output_file_counts
from engine.reports import BulkReport
from pipelines.defs._shared.connection_facts import connection_metadata, step_connection
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs._shared.metadata import (
    CheckVerdict,
    bulk_report_metadata,
    check_result,
    manifest_counts_verdict,
    quarantine_verdict,
    server_errors_verdict,
    without_freshness,
)
from pipelines.defs._shared.partitions import bulk_connections_partitions
from pipelines.defs._shared.source_hold import stop_if_held
from pipelines.defs._shared.tables import ASSET_OWNERS, fhir_resources_metadata, stored_rows
from pipelines.defs.sync.type_assets import DUPLICATE_CHECK, duplicate_check
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    SyncPolicyResource,
    WarehouseResource,
)

__all__ = [
    "BULK_EXPORT_JOB",
    "BULK_GROUP",
    "COMPLETE_CHECK",
    "MANIFEST_CHECK",
    "QUARANTINE_CHECK",
    "SERVER_ERRORS_CHECK",
    "bulk_export_asset",
    "bulk_export_job",
    "defs",
]

BULK_GROUP = "bulk"
BULK_EXPORT_JOB = "bulk_export"
MANIFEST_CHECK = "manifest_line_counts_match"
QUARANTINE_CHECK = "quarantine_within_threshold"
COMPLETE_CHECK = "export_complete"
SERVER_ERRORS_CHECK = "no_server_errors"
BULK_EXPORT_KEY = AssetKey([BULK_GROUP, "export"])


@asset(
    key=BULK_EXPORT_KEY,
    group_name=BULK_GROUP,
    partitions_def=bulk_connections_partitions,
    owners=ASSET_OWNERS,
    metadata=fhir_resources_metadata(),
    kinds={"fhir", "ndjson", "parquet"},
    description="A FHIR Bulk $export (group or system level) since the last export, landed and upserted.",
    check_specs=[
        AssetCheckSpec(MANIFEST_CHECK, asset=BULK_EXPORT_KEY, description="BDX-20: file lines equal manifest count."),
        AssetCheckSpec(QUARANTINE_CHECK, asset=BULK_EXPORT_KEY, description="Quarantined lines within threshold."),
        AssetCheckSpec(DUPLICATE_CHECK, asset=BULK_EXPORT_KEY, description="Every stored row has its own key."),
        AssetCheckSpec(
            COMPLETE_CHECK,
            asset=BULK_EXPORT_KEY,
            description="BDX-22: no error file reports a failed type (else _since is held and the run fails).",
            blocking=True,
        ),
        AssetCheckSpec(
            SERVER_ERRORS_CHECK,
            asset=BULK_EXPORT_KEY,
            description="The server's error files report no OperationOutcome issue of severity error or fatal.",
        ),
    ],
)
def bulk_export_asset(
    context: AssetExecutionContext,
    app_db: AppDatabaseResource,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
    ehr_http: EhrHttpResource,
    policy: SyncPolicyResource,
) -> MaterializeResult:  # type: ignore[type-arg]  # Dagster needs the bare class with check specs
    connection_id = context.partition_key

    def progress(event: str, detail: dict[str, Any]) -> None:
        context.log.info("bulk export %s: %s %s", connection_id, event, detail)

    with sync_environment(app_db, landing, warehouse, ehr_http, policy) as env:
        who = connection_metadata(step_connection(env.db, connection_id, bulk=True))
        # a kick-off refused 429 noted its Retry-After: Dagster's automatic retry sends nothing before it
        stop_if_held(context.instance, context.run, env.db, connection_id, "bulk export", datetime.now(UTC))
        with hold_connection(env, connection_id, context.run.run_id):  # one sync of a connection at a time
            report = run_bulk_export(env, connection_id, context.run.run_id, progress=progress)
            files = output_file_counts(env.db, report.job_id) if report.job_id else []
    metadata = {**bulk_report_metadata(report), **who}
    if report.status not in ("completed", "partial"):
        raise Failure(description=f"bulk export of {connection_id} failed: {report.error}", metadata=metadata)
    manifest = manifest_counts_verdict(files)
    if report.count_mismatches:  # the engine's own comparison (files of a resumed run included)
        engine = report.named_count_mismatches()  # at most 100 named, then "and N more"
        manifest = CheckVerdict(False, manifest.description, {**manifest.metadata, "engine": engine})
    fetched = sum(r.fetched for r in report.types.values())
    quarantined = sum(r.quarantined for r in report.types.values())
    metadata["count_mismatches"] = MetadataValue.int(report.count_mismatched)
    live, duplicates = duplicate_check(warehouse, connection_id)
    metadata.update(stored_rows(live))  # every live row of the connection (all types) after this export
    return MaterializeResult(
        metadata=metadata,
        check_results=[
            check_result(MANIFEST_CHECK, manifest),
            check_result(QUARANTINE_CHECK, quarantine_verdict(fetched, quarantined, policy.quarantine_max_ratio)),
            check_result(DUPLICATE_CHECK, duplicates),
            check_result(COMPLETE_CHECK, complete_verdict(report)),
            check_result(SERVER_ERRORS_CHECK, server_errors_verdict(report)),
        ],
    )


def complete_verdict(report: BulkReport) -> CheckVerdict:
    """Fails (blocking, so the run fails too) when error files report types that were not exported."""
    if not report.incomplete_types:
        return CheckVerdict(True, "no error file reports a failed type", {})
    return CheckVerdict(
        False,
        f"export incomplete for {', '.join(report.incomplete_types)}: {report.error}",
        {"incomplete_types": MetadataValue.json(report.incomplete_types)},
    )


bulk_export_job = define_asset_job(
    BULK_EXPORT_JOB,
    selection=without_freshness(AssetSelection.assets(BULK_EXPORT_KEY), BULK_EXPORT_KEY),
    executor_def=in_process_executor,
    description="Bulk $export of a backend or group connection (resumes an unfinished export).",
)

defs = Definitions(assets=[bulk_export_asset], jobs=[bulk_export_job])
