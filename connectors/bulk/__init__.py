"""FHIR Bulk Data 2.0 client: kick-off, polling, manifest validation, streamed downloads, NDJSON checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from connectors.bulk.client import BulkClient, BulkStatus, ExportLevel
    from connectors.bulk.file_limits import DEFAULT_FILE_DEADLINE_S
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

# Each public name's module, imported on first use (``connectors.lazy_exports``).
_HOMES = {
    "BulkClient": "connectors.bulk.client",
    "BulkStatus": "connectors.bulk.client",
    "ExportLevel": "connectors.bulk.client",
    "DEFAULT_FILE_DEADLINE_S": "connectors.bulk.file_limits",
    "BulkManifest": "connectors.bulk.manifest",
    "ManifestItem": "connectors.bulk.manifest",
    "parse_manifest": "connectors.bulk.manifest",
    "NdjsonVerification": "connectors.bulk.ndjson",
    "iter_ndjson_lines": "connectors.bulk.ndjson",
    "iter_numbered_ndjson_lines": "connectors.bulk.ndjson",
    "verify_ndjson_file": "connectors.bulk.ndjson",
    "FileOutcome": "connectors.bulk.parallel",
    "HostConcurrencyLimiter": "connectors.bulk.parallel",
    "download_items": "connectors.bulk.parallel",
    "WHOLE_EXPORT": "connectors.bulk.special_files",
    "DeletedRef": "connectors.bulk.special_files",
    "ErrorFileSummary": "connectors.bulk.special_files",
    "incomplete_types": "connectors.bulk.special_files",
    "iter_deleted_refs": "connectors.bulk.special_files",
    "summarize_error_file": "connectors.bulk.special_files",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
