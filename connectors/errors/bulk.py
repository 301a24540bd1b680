"""Bulk Data export failures: a failed, expired or incomplete job, or a file that cannot be kept."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connectors.errors.base import ContentTooLargeError, EhrSyncError


class BulkExportError(EhrSyncError):
    """A bulk job failed; ``status``/``operation_outcome`` say what the server answered, when it did."""

    code = "bulk_export_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        operation_outcome: Mapping[str, Any] | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.operation_outcome = dict(operation_outcome) if operation_outcome else None
        self.url = url


class BulkFileExpiredError(BulkExportError):
    code = "bulk_file_expired"


class BulkExportIncompleteError(BulkExportError):
    """The manifest's ``error`` files report ``error``/``fatal`` outcomes: some types were not (fully) exported."""

    code = "bulk_export_incomplete"

    def __init__(self, message: str, types: Iterable[str]) -> None:
        super().__init__(message)
        self.types = sorted(set(types))


class BulkExportBusyError(BulkExportError):
    """No export was started: the EHR answered the kick-off 429 (it limits concurrent exports per client; Oracle
    Health allows one per client and tenant, vendors.md §3), or another connection of the same client and FHIR base
    has an export in flight that such a vendor counts. ``retry_after``: seconds the server said to wait (None: it
    did not say). Nothing was recorded and ``_since`` is unchanged, so a later run kicks off afresh (BDX-07)."""

    code = "bulk_export_busy"

    def __init__(self, message: str, *, retry_after: float | None = None, **answer: Any) -> None:
        super().__init__(message, **answer)
        self.retry_after = retry_after


class BulkStatusUnavailableError(BulkExportError):
    """The status URL kept failing transiently (5xx, transport errors): the job stays resumable at that URL."""

    code = "bulk_status_unavailable"


class BulkFileTruncatedError(BulkExportError):
    """A bulk file arrived cut short (no final newline, or fewer bytes than Content-Length) on every attempt."""

    code = "bulk_file_truncated"


class BulkFileTooSlowError(BulkExportError):
    """A bulk file arrived slower than its low-speed limit (EHRSYNC_BULK_LOW_SPEED_*) on every attempt."""

    code = "bulk_file_too_slow"


class BulkFileDeadlineError(BulkExportError):
    """A bulk file was not downloaded within its deadline (EHRSYNC_BULK_FILE_DEADLINE_S), every attempt together."""

    code = "bulk_file_deadline_exceeded"


class BulkFileTooLargeError(ContentTooLargeError):
    """A bulk file is larger than EHRSYNC_BULK_MAX_FILE_BYTES: that file fails, the next run fetches it again."""

    code = "bulk_file_too_large"
