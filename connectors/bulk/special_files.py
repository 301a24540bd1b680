"""Readers for the manifest's ``deleted`` (BDX-21) and ``error`` (BDX-22) files, one line at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from connectors.bulk.ndjson import iter_ndjson_lines
from connectors.errors import BulkExportError
from connectors.http import parse_instant

__all__ = ["DeletedRef", "ErrorFileSummary", "iter_deleted_refs", "summarize_error_file"]


@dataclass(frozen=True)
class DeletedRef:
    """A tombstone: ``deleted_at`` is the Bundle's ``meta.lastUpdated``, else the export's transactionTime."""

    resource_type: str
    id: str
    deleted_at: datetime


def iter_deleted_refs(path: Path, transaction_time: datetime) -> Iterator[DeletedRef]:
    """Yield ``DELETE`` entries of the transaction Bundles in a ``deleted`` file; malformed lines raise."""
    for number, line in enumerate(iter_ndjson_lines(path), start=1):
        try:
            bundle = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BulkExportError(f"deleted file line {number} is not JSON") from exc
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise BulkExportError(f"deleted file line {number} is not a Bundle")
        meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
        deleted_at = (parse_instant(meta.get("lastUpdated")) if meta else None) or transaction_time
        for entry in bundle.get("entry") or []:
            request = entry.get("request") if isinstance(entry, dict) else None
            if not isinstance(request, dict) or request.get("method") != "DELETE":
                continue
            url = str(request.get("url") or "").split("?", 1)[0].strip("/")
            parts = url.split("/")
            if len(parts) < 2 or not parts[-2] or not parts[-1]:
                raise BulkExportError(f"deleted file line {number}: request.url is not Type/id")
            yield DeletedRef(parts[-2], parts[-1], deleted_at)


@dataclass(frozen=True)
class ErrorFileSummary:
    """Issue counts of an ``error`` file: ``information``/``warning`` are metadata, ``error``/``fatal`` fail checks."""

    outcomes: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.by_severity.get("error", 0) + self.by_severity.get("fatal", 0)


def summarize_error_file(path: Path) -> ErrorFileSummary:
    """Count OperationOutcome issues by severity and code (diagnostics are not kept: they may hold PHI)."""
    outcomes = 0
    severities: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for number, line in enumerate(iter_ndjson_lines(path), start=1):
        try:
            outcome = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BulkExportError(f"error file line {number} is not JSON") from exc
        if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
            raise BulkExportError(f"error file line {number} is not an OperationOutcome")
        outcomes += 1
        for issue in outcome.get("issue") or []:
            if isinstance(issue, dict):
                severities[str(issue.get("severity", "error"))] += 1
                codes[str(issue.get("code", "unknown"))] += 1
    return ErrorFileSummary(outcomes, dict(severities), dict(codes))
