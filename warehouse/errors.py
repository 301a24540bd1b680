"""Typed errors of the warehouse package.

``warehouse`` may not import ``connectors``, so it has its own root, :class:`WarehouseError`. Callers that cross
a package boundary (pipelines) wrap or catch these by type. Messages name the problem and the ids involved but
never resource content (PHI).

    WarehouseError
    ├── LandingError              bad writer arguments or a landing file that cannot be written
    │   ├── LandingFileTooLargeError   an NDJSON file holds (or its gzip inflates to) more than the limit
    │   └── LandingDiskFullError       the landing folder's (or attachment store's) disk or quota is full
    ├── LandedFileError           a LandedFile / Parquet file that is missing or not a landing file
    ├── AttachmentError           an attachment that cannot be stored
    │   └── AttachmentIntegrityError   content does not match the expected sha256
    ├── InvalidInputError         bad arguments to a warehouse call (naive datetime, bad OperationOutcome line)
    ├── WarehouseTargetError      an unusable ``open_warehouse`` target (unknown scheme, missing read-only file)
    ├── SchemaVersionError        the database was created by a newer ehrsync
    ├── WarehouseLockTimeoutError the inter-process write lock (or DuckDB's own file lock) was not granted in time
    ├── WarehouseCheckpointError  committed writes could not be written into the DuckDB file (kept in its log)
    └── WarehouseMemoryError      the database engine hit its memory limit (DuckDB ``memory_limit``)
"""

from __future__ import annotations

__all__ = [
    "AttachmentError",
    "AttachmentIntegrityError",
    "InvalidInputError",
    "LandedFileError",
    "LandingDiskFullError",
    "LandingError",
    "LandingFileTooLargeError",
    "SchemaVersionError",
    "WarehouseCheckpointError",
    "WarehouseError",
    "WarehouseLockTimeoutError",
    "WarehouseMemoryError",
    "WarehouseTargetError",
]


class WarehouseError(Exception):
    """Root of every error the warehouse package raises on purpose."""


class LandingError(WarehouseError):
    """A landing writer was misconfigured or its Parquet file could not be written."""


class LandingFileTooLargeError(LandingError):
    """An NDJSON file to land holds more bytes than its limit, or its gzip inflates past it: nothing was landed,
    and no more of it was inflated than the limit."""


class LandingDiskFullError(LandingError):
    """A landing file could not be written (or an attachment moved into the store) because its disk is full (ENOSPC)
    or the user's quota there is spent (EDQUOT): the message names the file, the half-written file is deleted, and an
    earlier landing is untouched.
    Every later write to the same folder would fail alike, so callers stop there instead of going on."""

    code = "landing_disk_full"


class LandedFileError(WarehouseError):
    """A landed file is missing or does not have the BDX-23 landing columns."""


class AttachmentError(WarehouseError):
    """An attachment could not be stored in the content-addressed store."""


class AttachmentIntegrityError(AttachmentError):
    """The attachment's content does not hash to the sha256 the caller expected."""


class InvalidInputError(WarehouseError, ValueError):
    """A caller passed an argument the warehouse cannot use (the message says which)."""


class WarehouseTargetError(WarehouseError):
    """``open_warehouse`` was given a target it cannot open."""


class WarehouseNotCreatedError(WarehouseTargetError):
    """A read-only open found no warehouse yet (no DuckDB file, no tables): nothing was ever synced there."""


class SchemaVersionError(WarehouseError):
    """The database schema is newer than this code understands; refuse rather than corrupt it."""


class WarehouseLockTimeoutError(WarehouseError):
    """Another process held the warehouse write lock for longer than the configured timeout."""


class WarehouseCheckpointError(WarehouseError):
    """DuckDB could not write a batch's committed changes into the file when letting go of it (a full disk): they
    stay in its ``.wal`` log and are applied the next time the file is opened."""


class WarehouseMemoryError(WarehouseError):
    """The engine ran out of its memory limit; the write was rolled back and can be retried with more memory."""
