"""Engine reports → Dagster metadata and asset-check verdicts (pure functions, tested as tables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import AssetCheckKey, AssetCheckResult, AssetKey, AssetSelection, MetadataValue

from engine.bulk_file_counts import FileCount
from engine.reports import COUNT_FIELDS, MAX_NAMED_MISMATCHES, BulkReport, TypeReport, named_at_most

__all__ = [
    "FRESHNESS_CHECK",
    "CheckVerdict",
    "FileCount",
    "bulk_report_metadata",
    "check_result",
    "duplicate_keys_verdict",
    "manifest_counts_verdict",
    "quarantine_verdict",
    "server_errors_verdict",
    "type_report_metadata",
    "without_freshness",
]

# Evaluated by its own schedule (``pipelines/defs/freshness``), never as a step of a sync run: a sync job's
# selection takes its assets' checks, and this one reads every connection.
FRESHNESS_CHECK = "sync_freshness"


def without_freshness(selection: AssetSelection, *assets: AssetKey) -> AssetSelection:
    """``selection`` less the freshness checks of ``assets``."""
    return selection - AssetSelection.checks(*(AssetCheckKey(key, FRESHNESS_CHECK) for key in assets))


def type_report_metadata(report: TypeReport, *, skipped: bool | None = None) -> dict[str, MetadataValue]:
    """Metadata for one resource type's materialization: every count, the duration and the new mark."""
    meta: dict[str, MetadataValue] = {name: MetadataValue.int(int(getattr(report, name))) for name in COUNT_FIELDS}
    meta["duration_s"] = MetadataValue.float(round(float(report.duration_s), 3))
    meta["high_water_mark"] = MetadataValue.text(_instant(report.high_water_mark))
    is_skipped = report.skipped_reason is not None if skipped is None else skipped
    meta["skipped"] = MetadataValue.bool(is_skipped)
    if report.skipped_reason:
        meta["skipped_reason"] = MetadataValue.text(report.skipped_reason)
    return meta


def bulk_report_metadata(report: BulkReport) -> dict[str, MetadataValue]:
    """Metadata for a Bulk export: totals over types, the export's own facts, and a per-type table as JSON.

    ``high_water_mark`` is the ``_since`` the run stored; the transactionTime of a held (partial) export is only
    ``transaction_time``."""
    meta: dict[str, MetadataValue] = {
        name: MetadataValue.int(sum(int(getattr(r, name)) for r in report.types.values()))
        for name in ("fetched", "created", "updated", "unchanged", "deleted", "quarantined", "bytes")
    }
    meta.update(
        {
            "files": MetadataValue.int(report.files),
            "error_files": MetadataValue.int(report.error_files),
            "error_outcomes": MetadataValue.int(report.error_outcomes),
            "failed_files": MetadataValue.int(report.failed_files),
            "reruns": MetadataValue.int(report.reruns),
            "resumed": MetadataValue.bool(report.resumed),
            "since": MetadataValue.text(_instant(report.since)),
            "high_water_mark": MetadataValue.text(_instant(report.mark_stored)),  # stored, never a held one
            "transaction_time": MetadataValue.text(_instant(report.transaction_time)),
            "duration_s": MetadataValue.float(round(float(report.duration_s), 3)),
            "status": MetadataValue.text(report.status),
            "membership_checked": MetadataValue.bool(report.membership_checked),
            "new_members": MetadataValue.int(report.new_members),
            "removed_members": MetadataValue.int(report.removed_members),
            "per_type": MetadataValue.json(report.counts()),
        }
    )
    if report.job_id:
        meta["job_id"] = MetadataValue.text(report.job_id)
    if report.error_issues:
        meta["error_issues"] = MetadataValue.json(dict(report.error_issues))
    return meta


def _instant(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "none"


@dataclass(frozen=True)
class CheckVerdict:
    passed: bool
    description: str
    metadata: Mapping[str, Any]


def check_result(check_name: str, verdict: CheckVerdict, asset_key: AssetKey | None = None) -> AssetCheckResult:
    """The Dagster check result for a verdict (returned with the asset's ``MaterializeResult``)."""
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name,
        passed=verdict.passed,
        description=verdict.description,
        metadata=dict(verdict.metadata),
    )


def quarantine_verdict(fetched: int, quarantined: int, max_ratio: float) -> CheckVerdict:
    """Quarantined lines must stay within ``max_ratio`` of the lines read (``fetched`` counts quarantined ones)."""
    seen = max(fetched, quarantined)
    ratio = quarantined / seen if seen else 0.0
    passed = ratio <= max_ratio
    verdict = "within" if passed else "above"
    return CheckVerdict(
        passed,
        f"{quarantined} of {seen} lines quarantined ({ratio:.2%}), {verdict} the {max_ratio:.2%} threshold",
        {"quarantined": quarantined, "lines_read": seen, "ratio": round(ratio, 6), "max_ratio": max_ratio},
    )


def duplicate_keys_verdict(rows: int, distinct_keys: int) -> CheckVerdict:
    """Stored rows (tombstones included) must each have their own (type, id) key (BDX-24)."""
    duplicates = rows - distinct_keys
    return CheckVerdict(
        duplicates == 0,
        f"{rows} rows, {distinct_keys} distinct keys" + (f", {duplicates} duplicated" if duplicates else ""),
        {"rows": rows, "distinct_keys": distinct_keys, "duplicates": duplicates},
    )


def manifest_counts_verdict(files: list[FileCount]) -> CheckVerdict:
    """BDX-20: every file's line count equals the manifest ``count`` when the server gave one. The first 100
    mismatched files are named (``mismatches``, then ``"and N more"``); ``mismatched`` counts them all."""
    mismatched = [f for f in files if f.expected is not None and f.expected != f.actual]
    unchecked = sum(1 for f in files if f.expected is None)
    meta: dict[str, Any] = {"files": len(files), "mismatched": len(mismatched), "without_count": unchecked}
    if mismatched:
        named = [
            {"url": f.url, "type": f.resource_type, "manifest_count": f.expected, "lines": f.actual}
            for f in mismatched[:MAX_NAMED_MISMATCHES]
        ]
        meta["mismatches"] = named_at_most(named, len(mismatched))
    return CheckVerdict(
        not mismatched,
        f"{len(files) - len(mismatched)} of {len(files)} files match their manifest count",
        meta,
    )


def server_errors_verdict(report: BulkReport) -> CheckVerdict:
    """Fails when the export's error files hold an issue of severity error or fatal, or a line that is not an
    OperationOutcome at all (the server said something went wrong, whatever else arrived)."""
    failing = report.error_issues.get("error", 0) + report.error_issues.get("fatal", 0)
    unreadable = report.types["OperationOutcome"].quarantined if "OperationOutcome" in report.types else 0
    meta: dict[str, Any] = {
        "error_files": report.error_files,
        "outcomes": report.error_outcomes,
        "failing_issues": failing,
        "unreadable_lines": unreadable,
        "issues_by_severity": dict(sorted(report.error_issues.items())),
    }
    if not failing and not unreadable:
        notes = sum(report.error_issues.values())
        return CheckVerdict(True, f"no error or fatal issue reported ({notes} information/warning issues)", meta)
    return CheckVerdict(
        False,
        f"the server reported {failing} error/fatal issues and {unreadable} unreadable lines in "
        f"{report.error_files} error files",
        meta,
    )
