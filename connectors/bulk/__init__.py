"""FHIR Bulk Data 2.0 client: kick-off, polling, manifest validation, streamed downloads, NDJSON checks."""

from connectors.bulk.client import BulkClient, BulkStatus, ExportLevel
from connectors.bulk.files import DEFAULT_FILE_DEADLINE_S
from connectors.bulk.manifest import BulkManifest, ManifestItem, parse_manifest
from connectors.bulk.ndjson import (
    NdjsonVerification,
    iter_ndjson_lines,
    iter_numbered_ndjson_lines,
    verify_ndjson_file,
)
from connectors.bulk.parallel import FileOutcome, HostConcurrencyLimiter, download_items
from connectors.bulk.special_files import (
    WHOLE_EXPORT,
    DeletedRef,
    ErrorFileSummary,
    incomplete_types,
    iter_deleted_refs,
    summarize_error_file,
)

__all__ = [
    "DEFAULT_FILE_DEADLINE_S",
    "WHOLE_EXPORT",
    "BulkClient",
    "BulkManifest",
    "BulkStatus",
    "DeletedRef",
    "ErrorFileSummary",
    "ExportLevel",
    "FileOutcome",
    "HostConcurrencyLimiter",
    "ManifestItem",
    "NdjsonVerification",
    "download_items",
    "incomplete_types",
    "iter_deleted_refs",
    "iter_ndjson_lines",
    "iter_numbered_ndjson_lines",
    "parse_manifest",
    "summarize_error_file",
    "verify_ndjson_file",
]
