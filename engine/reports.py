"""What a sync step did, as plain dataclasses the Dagster layer turns into ``MaterializeResult`` metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

_T = TypeVar("_T")

SCOPE_NOT_GRANTED = "scope_not_granted"
NOT_SUPPORTED = "not_supported"


#: Files a run names whose line count differs from its manifest ``count`` (BDX-20), in its report and its check's
#: metadata; the rest are counted ("and N more"). A manifest may list up to EHRSYNC_BULK_MAX_FILES files: naming
#: 20,000 of them was ~3 MB of Dagster metadata for one run.
MAX_NAMED_MISMATCHES = 100


def named_at_most(items: list[_T], total: int) -> list[_T | str]:
    """The first :data:`MAX_NAMED_MISMATCHES` of ``items`` and, when ``total`` is more, ``"and N more"``."""
    named: list[_T | str] = list(items[:MAX_NAMED_MISMATCHES])
    if total > len(named):
        named.append(f"and {total - len(named)} more")
    return named


#: The additive counters of a TypeReport: summed by ``absorb`` and reported as run metadata.
COUNT_FIELDS = (
    "fetched",
    "created",
    "updated",
    "unchanged",
    "deleted",
    "quarantined",
    "bytes",
    "pages",
    "files",
    "attachments",
    "attachments_failed",
    "not_found",
)


@dataclass
class TypeReport:
    """One resource type in one run: landing fills the fetch counts, upsert the warehouse counts.

    ``high_water_mark`` is the server-clock mark this run will store (landing) or stored (upsert).
    ``skipped_reason`` is set when the type was not synced on purpose (e.g. ``scope_not_granted``);
    ``error`` when it failed: other types go on regardless.
    """

    resource_type: str
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    bytes: int = 0
    pages: int = 0
    files: int = 0
    attachments: int = 0
    attachments_failed: int = 0
    not_found: int = 0
    duration_s: float = 0.0
    high_water_mark: datetime | None = None
    skipped_reason: str | None = None
    error: str | None = None
    #: The server's searchset stopped early and the recovery did not fetch everything: the mark was held back.
    incomplete: bool = False
    #: What went wrong without failing the step (a searchset that stopped early, how it was recovered).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def absorb(self, other: TypeReport) -> None:
        """Add another report's counts to this one (landing + upsert, or several Bulk files of one type)."""
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duration_s += other.duration_s
        self.high_water_mark = other.high_water_mark or self.high_water_mark
        self.skipped_reason = other.skipped_reason or self.skipped_reason
        self.error = other.error or self.error
        self.incomplete = self.incomplete or other.incomplete
        self.warnings.extend(w for w in other.warnings if w not in self.warnings)

    def as_metadata(self) -> dict[str, Any]:
        """JSON-friendly dict (instants as ISO strings; ``None``, no warnings and ``incomplete=False`` dropped)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or (key in ("warnings", "incomplete") and not value):
                continue
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


# Landing and upsert report the same shape so the Dagster layer handles both alike.
LandingReport = TypeReport
UpsertReport = TypeReport


@dataclass
class BulkReport:
    """One Bulk ``$export`` run (kick-off or resume, download, land, upsert, cursor)."""

    run_id: str
    connection_id: str
    job_id: str | None = None
    status: str = "running"
    resumed: bool = False
    reruns: int = 0
    since: datetime | None = None
    transaction_time: datetime | None = None
    #: The ``_since`` this run stored (the export's transactionTime, BDX-14); None when the mark was held (a partial
    #: or failed export) or not moved (a follow-up export, BDX-15).
    mark_stored: datetime | None = None
    files: int = 0
    error_files: int = 0
    error_outcomes: int = 0
    error_issues: dict[str, int] = field(default_factory=dict)
    failed_files: int = 0
    # Types the manifest's error files report as failed (``*``: a failure naming no type): the run is partial.
    incomplete_types: list[str] = field(default_factory=list)
    # Files whose line count differs from the manifest's (BDX-20): all counted, the first MAX_NAMED_MISMATCHES named.
    count_mismatches: list[str] = field(default_factory=list)
    count_mismatched: int = 0
    types: dict[str, TypeReport] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    # BDX-15 (group level): whether membership was checked, members whose full record was exported, members gone
    membership_checked: bool = False
    new_members: int = 0
    removed_members: int = 0

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.types.values())

    def absorb(self, other: BulkReport) -> None:
        """Add a follow-up export's file and type counts (the new-members export of BDX-15) to this report."""
        self.files += other.files
        self.error_files += other.error_files
        self.error_outcomes += other.error_outcomes
        self.failed_files += other.failed_files
        self.reruns += other.reruns
        for line in other.count_mismatches:
            self.note_count_mismatch(line)
        self.count_mismatched += other.count_mismatched - len(other.count_mismatches)
        self.incomplete_types = sorted(set(self.incomplete_types) | set(other.incomplete_types))
        for severity, n in other.error_issues.items():
            self.error_issues[severity] = self.error_issues.get(severity, 0) + n
        for rtype, tr in other.types.items():
            self.type_report(rtype).absorb(tr)

    def note_count_mismatch(self, line: str) -> None:
        """Count one file whose lines differ from its manifest ``count``; name it among the first ones only."""
        self.count_mismatched += 1
        if len(self.count_mismatches) < MAX_NAMED_MISMATCHES:
            self.count_mismatches.append(line)

    def named_count_mismatches(self) -> list[str]:
        """The files named, then ``"and N more"`` when more were counted."""
        return named_at_most(self.count_mismatches, self.count_mismatched)

    def type_report(self, resource_type: str) -> TypeReport:
        return self.types.setdefault(resource_type, TypeReport(resource_type))

    def counts(self) -> dict[str, dict[str, Any]]:
        return {t: r.as_metadata() for t, r in self.types.items()}
