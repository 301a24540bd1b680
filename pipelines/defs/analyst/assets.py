"""The analyst views as Dagster assets: ``analyst/<view>``, downstream of every ``warehouse/<Type>`` and of
``bulk/export``, so the lineage shows where each table comes from.

One step refreshes them all (``warehouse.view_refresh``) and, on DuckDB, publishes the analyst snapshot
(``warehouse.snapshot``: analysts open ``analyst/current/analyst.duckdb`` or the Parquet files, never the
warehouse file, so they never block a sync). On PostgreSQL analysts query the views live (MVCC), so there is no
file snapshot: it would copy the whole warehouse per refresh to protect readers that need no protection. Each view
reports its rows, table name and column schema; Observation, Condition and Encounter are checked to reference a
patient the warehouse holds for the same connection.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    multi_asset,
)

from engine import PATIENT_TYPES, REFERENCED_TYPES
from pipelines.analyst_resource import AnalystResource
from pipelines.defs.bulk.assets import BULK_EXPORT_KEY
from pipelines.defs.sync.type_assets import warehouse_key
from pipelines.resources import WarehouseResource
from warehouse import VIEW_NAMES, Warehouse, WarehouseError
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.note_outbox import NOTE_OUTBOX_TABLE, ensure_note_outbox_table
from warehouse.snapshot import AnalystSnapshot, AnalystTable, describe_views, publish_snapshot
from warehouse.view_checks import PatientReferences, patient_references
from warehouse.view_refresh import refresh_analyst_views

__all__ = [
    "ANALYST_GROUP",
    "ANALYST_OWNERS",
    "CHECKED_VIEWS",
    "PATIENT_REFERENCES_CHECK",
    "analyst_key",
    "analyst_views",
]

ANALYST_GROUP = "analyst"
ANALYST_OWNERS = ["team:analytics"]
PATIENT_REFERENCES_CHECK = "patient_references_resolve"
CHECKED_VIEWS = tuple(v for v in ("observation", "condition", "encounter") if v in VIEW_NAMES)


def analyst_key(view: str) -> AssetKey:
    return AssetKey([ANALYST_GROUP, view])


_UPSTREAM = [*(warehouse_key(t) for t in (*PATIENT_TYPES, *REFERENCED_TYPES)), BULK_EXPORT_KEY]


@multi_asset(
    name="refresh_analyst_views",
    specs=[
        AssetSpec(
            analyst_key(view),
            group_name=ANALYST_GROUP,
            owners=ANALYST_OWNERS,
            deps=_UPSTREAM,
            kinds={"sql"},
            description=f"The analyst view {view} (SQL-on-FHIR), published read-only for analysts.",
        )
        for view in VIEW_NAMES
    ],
    check_specs=[
        AssetCheckSpec(
            PATIENT_REFERENCES_CHECK,
            asset=analyst_key(view),
            description="Every row references a Patient the warehouse holds for the same connection.",
        )
        for view in CHECKED_VIEWS
    ],
)
def analyst_views(
    context: AssetExecutionContext, warehouse: WarehouseResource, analyst: AnalystResource
) -> Iterator[MaterializeResult]:  # type: ignore[type-arg]  # Dagster needs the bare class with check specs
    try:
        with warehouse.open() as wh:
            recreated = refresh_analyst_views(wh, lock_timeout_s=analyst.lock_timeout_s)
            snapshot, tables = _publish(wh, analyst.generations)
            checks = {view: patient_references(wh, view) for view in CHECKED_VIEWS}
    except WarehouseError as exc:
        raise Failure(description=f"analyst views not refreshed: {exc}") from exc
    context.log.info(
        "analyst views: %d recreated, %s", len(recreated), f"snapshot {snapshot.generation}" if snapshot else "live"
    )
    for table in tables:
        metadata = _metadata(table, snapshot, recreated=table.name in recreated)
        results = [_check_result(checks[table.name])] if table.name in checks else []
        yield MaterializeResult(asset_key=analyst_key(table.name), metadata=metadata, check_results=results)


def _publish(wh: Warehouse, keep: int) -> tuple[AnalystSnapshot | None, tuple[AnalystTable, ...]]:
    """DuckDB: the new snapshot and its tables; PostgreSQL: the live views as they are (no file snapshot)."""
    if isinstance(wh, DuckDBWarehouse):  # the outbox table rides along: analysts never open the live file
        ensure_note_outbox_table(wh)
        snapshot = publish_snapshot(wh, (*VIEW_NAMES, NOTE_OUTBOX_TABLE), keep=keep)
        return snapshot, tuple(t for t in snapshot.tables if t.name in VIEW_NAMES)
    return None, tuple(describe_views(wh, VIEW_NAMES))


def _metadata(table: AnalystTable, snapshot: AnalystSnapshot | None, *, recreated: bool) -> dict[str, MetadataValue]:
    schema = TableSchema(columns=[TableColumn(name, type_) for name, type_ in table.columns])
    metadata: dict[str, MetadataValue] = {
        "dagster/row_count": MetadataValue.int(table.rows),
        "dagster/table_name": MetadataValue.text(table.name),
        "dagster/column_schema": MetadataValue.table_schema(schema),
        "recreated": MetadataValue.bool(recreated),
    }
    if snapshot is not None:
        metadata["snapshot"] = MetadataValue.path(str(snapshot.database))
        metadata["current"] = MetadataValue.path(str(snapshot.current / snapshot.database.name))
        if table.parquet is not None:
            metadata["parquet"] = MetadataValue.path(str(table.parquet))
    return metadata


def _check_result(refs: PatientReferences) -> AssetCheckResult:
    """Counts and a few resource ids (ids only, never PHI) of rows whose patient is absent or not synced."""
    return AssetCheckResult(
        asset_key=analyst_key(refs.view),
        check_name=PATIENT_REFERENCES_CHECK,
        passed=refs.ok,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"all {refs.rows} rows reference a synced patient"
            if refs.ok
            else f"{refs.missing} rows reference no patient, {refs.dangling} a patient not in the same connection"
        ),
        metadata={
            "rows": MetadataValue.int(refs.rows),
            "missing_patient_reference": MetadataValue.int(refs.missing),
            "dangling_patient_reference": MetadataValue.int(refs.dangling),
            "example_ids": MetadataValue.json(list(refs.examples)),
        },
    )
