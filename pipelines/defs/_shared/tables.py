"""What every asset says about the table it writes: owners, ``dagster/table_name``, column schema, row counts.

Dagster's UI reads these well-known keys: the table name and column schema on the asset's definition, and
``dagster/row_count`` on each materialization (rows stored for that partition). The warehouse assets and
``bulk/export`` write ``fhir_resources`` (columns ``warehouse._sql.RESOURCE_COLUMNS``); the landing assets write
Parquet files shaped like ``warehouse.LANDING_FILE_SCHEMA`` under ``landing/<connection>/<Type>/``.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
from dagster import MetadataValue, TableColumn, TableSchema

from warehouse import LANDING_FILE_SCHEMA
from warehouse._sql import RESOURCE_COLUMNS

__all__ = [
    "ASSET_OWNERS",
    "COLUMN_SCHEMA_KEY",
    "FHIR_RESOURCES_TABLE",
    "ROW_COUNT_KEY",
    "TABLE_NAME_KEY",
    "fhir_resources_metadata",
    "fhir_resources_schema",
    "landing_metadata",
    "landing_path_pattern",
    "row_count",
    "stored_rows",
]

# One owner for every ehrsync asset (Dagster's ``team:`` form); the analyst views use it too.
ASSET_OWNERS: Final = ["team:ehrsync"]
FHIR_RESOURCES_TABLE: Final = "fhir_resources"
TABLE_NAME_KEY: Final = "dagster/table_name"
COLUMN_SCHEMA_KEY: Final = "dagster/column_schema"
ROW_COUNT_KEY: Final = "dagster/row_count"

_TIMESTAMPS = frozenset({"last_updated", "deleted_at", "landed_at", "transaction_time"})
_NOT_NULL = frozenset({"connection_id", "resource_type", "id", "landed_at"})
_DESCRIPTIONS = {
    "connection_id": "the connection (partition key) the row came through",
    "resource_type": "FHIR resource type",
    "id": "the resource's id on the EHR",
    "tenant_id": "the practice the connection belongs to",
    "deleted_at": "set when the EHR deleted the resource (tombstone)",
    "content_hash": "sha256 of the stored JSON (unchanged versions are not rewritten)",
    "resource": "the FHIR resource (JSON; JSONB on PostgreSQL)",
}


def _column_type(name: str) -> str:
    if name in _TIMESTAMPS:
        return "timestamptz"
    return "json" if name == "resource" else "text"


def fhir_resources_schema() -> TableSchema:
    """``fhir_resources`` as the DDL creates it (one row per connection, type and id)."""
    return TableSchema(
        columns=[
            TableColumn(name, _column_type(name), description=_DESCRIPTIONS.get(name)) for name in RESOURCE_COLUMNS
        ]
    )


def _arrow_type(field: pa.Field) -> str:
    return "timestamptz" if pa.types.is_timestamp(field.type) else str(field.type)


def landing_path_pattern(resource_type: str) -> str:
    """Where a landing asset's Parquet files are, relative to the state directory."""
    return f"landing/{{connection_id}}/{resource_type}/{{run_id}}-{{seq}}.parquet"


def fhir_resources_metadata() -> dict[str, MetadataValue]:
    """Definition metadata of an asset that writes ``fhir_resources``."""
    return {
        TABLE_NAME_KEY: MetadataValue.text(FHIR_RESOURCES_TABLE),
        COLUMN_SCHEMA_KEY: MetadataValue.table_schema(fhir_resources_schema()),
    }


def landing_metadata(resource_type: str) -> dict[str, MetadataValue]:
    """Definition metadata of a landing asset: its path pattern and the Parquet columns (BDX-23)."""
    schema = TableSchema(columns=[TableColumn(f.name, _arrow_type(f)) for f in LANDING_FILE_SCHEMA])
    return {
        TABLE_NAME_KEY: MetadataValue.text(landing_path_pattern(resource_type)),
        COLUMN_SCHEMA_KEY: MetadataValue.table_schema(schema),
    }


def row_count(rows: int | None) -> dict[str, MetadataValue]:
    """``dagster/row_count`` for a materialization; nothing when the count could not be read."""
    return {} if rows is None else {ROW_COUNT_KEY: MetadataValue.int(int(rows))}


def stored_rows(live: int | None) -> dict[str, MetadataValue]:
    """``live_rows`` and ``dagster/row_count`` of a warehouse materialization: the live rows stored now; nothing
    when the warehouse could not be read (its check says why), never a false 0."""
    return {} if live is None else {"live_rows": MetadataValue.int(int(live)), **row_count(live)}
