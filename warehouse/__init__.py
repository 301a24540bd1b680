"""ehrsync warehouse: NDJSON -> Parquet landing -> DuckDB / PostgreSQL upsert, plus attachments.

Plain Python (pyarrow, duckdb, psycopg, orjson); imports no other ehrsync package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports
from warehouse._memory import configure_streaming_memory

configure_streaming_memory()  # before anything imports pyarrow: Arrow reads its pool's name once, at load

if TYPE_CHECKING:
    from warehouse._filelock import lock_owner
    from warehouse._outcomes import ErrorCounts
    from warehouse.attachments import AttachmentRef, AttachmentStore
    from warehouse.errors import (
        AttachmentError,
        AttachmentIntegrityError,
        InvalidInputError,
        LandedFileError,
        LandingDiskFullError,
        LandingError,
        LandingFileTooLargeError,
        SchemaVersionError,
        WarehouseCheckpointError,
        WarehouseError,
        WarehouseLockTimeoutError,
        WarehouseMemoryError,
        WarehouseNotCreatedError,
        WarehouseTargetError,
    )
    from warehouse.factory import open_warehouse
    from warehouse.landed import (
        LANDING_FILE_SCHEMA,
        LANDING_SCHEMA,
        QUARANTINE_SCHEMA,
        LandedFile,
        landed_json_bytes,
        read_landed_file,
    )
    from warehouse.landing import LandingWriter
    from warehouse.merge import KeyCounts, UpsertStats, Warehouse
    from warehouse.views import VIEW_NAMES
    from warehouse.zone import LandingZone, land_ndjson_file

__all__ = [
    "LANDING_FILE_SCHEMA",
    "LANDING_SCHEMA",
    "QUARANTINE_SCHEMA",
    "VIEW_NAMES",
    "AttachmentError",
    "AttachmentIntegrityError",
    "AttachmentRef",
    "AttachmentStore",
    "ErrorCounts",
    "InvalidInputError",
    "KeyCounts",
    "LandedFile",
    "LandedFileError",
    "LandingDiskFullError",
    "LandingError",
    "LandingFileTooLargeError",
    "LandingWriter",
    "LandingZone",
    "SchemaVersionError",
    "UpsertStats",
    "Warehouse",
    "WarehouseCheckpointError",
    "WarehouseError",
    "WarehouseLockTimeoutError",
    "WarehouseMemoryError",
    "WarehouseNotCreatedError",
    "WarehouseTargetError",
    "land_ndjson_file",
    "landed_json_bytes",
    "lock_owner",
    "open_warehouse",
    "read_landed_file",
]

# Each public name's module, imported on first use (PEP 562):
# reading ``warehouse.errors`` or ``warehouse.limits`` (settings do) does not load pyarrow and DuckDB.
_HOMES = {
    "lock_owner": "warehouse._filelock",
    "ErrorCounts": "warehouse._outcomes",
    "AttachmentRef": "warehouse.attachments",
    "AttachmentStore": "warehouse.attachments",
    "AttachmentError": "warehouse.errors",
    "AttachmentIntegrityError": "warehouse.errors",
    "InvalidInputError": "warehouse.errors",
    "LandedFileError": "warehouse.errors",
    "LandingDiskFullError": "warehouse.errors",
    "LandingError": "warehouse.errors",
    "LandingFileTooLargeError": "warehouse.errors",
    "SchemaVersionError": "warehouse.errors",
    "WarehouseCheckpointError": "warehouse.errors",
    "WarehouseError": "warehouse.errors",
    "WarehouseLockTimeoutError": "warehouse.errors",
    "WarehouseMemoryError": "warehouse.errors",
    "WarehouseNotCreatedError": "warehouse.errors",
    "WarehouseTargetError": "warehouse.errors",
    "open_warehouse": "warehouse.factory",
    "LANDING_FILE_SCHEMA": "warehouse.landed",
    "LANDING_SCHEMA": "warehouse.landed",
    "QUARANTINE_SCHEMA": "warehouse.landed",
    "LandedFile": "warehouse.landed",
    "landed_json_bytes": "warehouse.landed",
    "read_landed_file": "warehouse.landed",
    "LandingWriter": "warehouse.landing",
    "KeyCounts": "warehouse.merge",
    "UpsertStats": "warehouse.merge",
    "Warehouse": "warehouse.merge",
    "VIEW_NAMES": "warehouse.views",
    "LandingZone": "warehouse.zone",
    "land_ndjson_file": "warehouse.zone",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
