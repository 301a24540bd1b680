"""ehrsync warehouse: NDJSON -> Parquet landing -> DuckDB / PostgreSQL upsert, plus attachments.

Plain Python (pyarrow, duckdb, psycopg, orjson); imports no other ehrsync package.
"""

from warehouse._memory import configure_streaming_memory

configure_streaming_memory()  # before anything imports pyarrow: Arrow reads its pool's name once, at load

from warehouse._filelock import lock_owner
from warehouse._outcomes import ErrorCounts
from warehouse.attachments import AttachmentRef, AttachmentStore
from warehouse.errors import (
    AttachmentError,
    AttachmentIntegrityError,
    InvalidInputError,
    LandedFileError,
    LandingError,
    LandingFileTooLargeError,
    SchemaVersionError,
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
    "LandingError",
    "LandingFileTooLargeError",
    "LandingWriter",
    "LandingZone",
    "SchemaVersionError",
    "UpsertStats",
    "Warehouse",
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
