"""Landed Bulk files wait here until enough bytes have gathered to merge them in one warehouse transaction.

A DuckDB commit per small file wrote every file through the write-ahead log and then again at the checkpoint,
and left the database file twice its size (docs/PERFORMANCE.md, issue 14). The files are already recorded
``landed`` when they join a group, so a crash before the group's commit loses nothing: the next run merges them
again (BDX-24 makes the replay exact), and only after the commit are they marked ``done``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine import bulk_state
from engine.checkpoints import checkpoint
from engine.landing_retention import drop_merged
from engine.reports import BulkReport, TypeReport
from warehouse import LandedFile, Warehouse, landed_json_bytes

__all__ = ["MergeGroup"]


@dataclass
class MergeGroup:
    """Landed output files of one export not merged yet; ``flush`` merges them together and marks them done."""

    wh: Warehouse
    report: BulkReport
    mark_done: Callable[[bulk_state.FileView, LandedFile], None]
    max_bytes: int
    landing_retention_days: int | None = None
    _files: list[tuple[bulk_state.FileView, LandedFile]] = field(default_factory=list)
    _bytes: int = 0

    def add(self, f: bulk_state.FileView, landed: LandedFile) -> None:
        """Queue one landed file; merges the group once it holds ``max_bytes`` of landed JSON, uncompressed (the
        compressed file size let a whole 10,000-patient export, 830 MB of JSON, wait for one transaction at the
        end, so nothing merged while files landed and DuckDB held every row of it at once)."""
        self._files.append((f, landed))
        self._bytes += landed_json_bytes(landed)
        if self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Merge every queued file in one transaction, then record each as done (in the order they landed)."""
        if not self._files:
            return
        files, self._files, self._bytes = self._files, [], 0
        stats = self.wh.upsert_many([landed for _, landed in files])
        for (f, landed), counts in zip(files, stats, strict=True):
            self.report.type_report(f.resource_type).absorb(
                TypeReport(
                    f.resource_type,
                    fetched=landed.rows + landed.quarantined,
                    created=counts.inserted,
                    updated=counts.updated,
                    unchanged=counts.unchanged,
                    quarantined=landed.quarantined,
                    bytes=landed.bytes,
                    files=1,
                )
            )
            self.mark_done(f, landed)
            checkpoint("bulk.file_upserted")
        # EHRSYNC_LANDING_RETENTION_DAYS=0: gone once merged
        drop_merged(self.landing_retention_days, [landed for _, landed in files])
