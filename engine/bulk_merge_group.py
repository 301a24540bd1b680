"""Landed Bulk files merge as they land, inside one warehouse transaction that commits once enough bytes gathered.

A DuckDB commit per small file wrote every file through the write-ahead log and then again at the checkpoint,
and left the database file twice its size (docs/PERFORMANCE.md, issue 14). So a group of files shares one
transaction; each file merges into it as soon as it lands (waiting for the whole group first left the last group's
merge alone on the critical path after the downloads ended), and the group commits at ``max_bytes`` of landed JSON.
The files are already recorded ``landed`` when they join a group, so a crash before the group's commit loses
nothing: the next run merges them again (BDX-24 makes the replay exact), and only after the commit are they marked
``done``. A group that runs out of the database's memory limit rolls back and merges its files one at a time.

A group runs at half the database's memory limit (``Warehouse.lean_memory``): DuckDB fills its buffer pool to the
limit while the transaction is open, and half of it fits ordinary exports at no cost (docs/PERFORMANCE.md). A
group that runs out there, merging or committing, even of one file, is merged again one file at a time under the
whole limit, and so is the rest of the export (medium resources, 8-100 KB each, need the whole limit).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from engine import bulk_state
from engine.checkpoints import checkpoint
from engine.landing_retention import drop_merged
from engine.reports import BulkReport, TypeReport
from warehouse import LandedFile, UpsertStats, Warehouse, WarehouseMemoryError, landed_json_bytes

__all__ = ["MergeGroup"]

_log = logging.getLogger(__name__)


@dataclass
class MergeGroup:
    """Landed output files of one export merged in the open transaction; ``flush`` commits and marks them done.

    Use it as a context manager: leaving it flushes, or on an exception rolls back what is not committed."""

    wh: Warehouse
    report: BulkReport
    mark_done: Callable[[bulk_state.FileView, LandedFile], None]
    max_bytes: int
    landing_retention_days: int | None = None
    _merged: list[tuple[bulk_state.FileView, LandedFile, UpsertStats]] = field(default_factory=list)
    _bytes: int = 0
    _open: contextlib.ExitStack | None = None
    _lean: bool = True  # the next group runs under ``lean_memory``; off for good once a lean group ran out
    _lowered: bool = False  # the open group's limit is the lean one

    def add(self, f: bulk_state.FileView, landed: LandedFile) -> None:
        """Merge one landed file into the group's transaction; commits the group once it holds ``max_bytes`` of
        landed JSON, uncompressed (the compressed file size let a whole 10,000-patient export, 830 MB of JSON, wait
        for one transaction at the end, and DuckDB held every row of it at once)."""
        if self._open is None:
            self._open = self._begin()
        try:
            stats = self.wh.upsert(landed)
        except BaseException as exc:
            lowered, failed = self._lowered, self._rollback(exc)
            if not isinstance(failed, WarehouseMemoryError) or not (self._merged or lowered):  # nothing to retry
                self._merged = []  # rolled back: never recorded as done
                if failed is exc:
                    raise
                raise failed from exc
            self._one_at_a_time([*((g, lf) for g, lf, _ in self._merged), (f, landed)], failed)
            return
        self._merged.append((f, landed, stats))
        self._bytes += landed_json_bytes(landed)
        if self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Commit the open transaction, then record each of its files as done (in the order they landed); a commit
        that runs out of the memory limit merges the files again one at a time."""
        if self._open is None:
            return
        stack, self._open = self._open, None
        merged, self._merged, self._bytes = self._merged, [], 0
        try:
            stack.close()  # the commit: another failure raises with every file still ``landed``, none recorded
        except WarehouseMemoryError as exc:  # the commit itself ran out of memory; the database rolled it back
            if len(merged) < 2 and not self._lowered:
                raise
            self._one_at_a_time([(f, landed) for f, landed, _ in merged], exc)
            return
        self._record(merged)

    def _begin(self) -> contextlib.ExitStack:
        """Hold the warehouse's writer and open the group's transaction (both released if either fails)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.wh.batch())
            self._lowered = self._lean and stack.enter_context(self.wh.lean_memory())
            stack.enter_context(self.wh.transaction())
            return stack.pop_all()

    def _rollback(self, exc: BaseException) -> BaseException:
        """Roll the open transaction back; the error to report (DuckDB's out-of-memory becomes a typed error)."""
        stack, self._open = self._open, None
        assert stack is not None
        self._bytes = 0  # ``_merged`` stays for the caller's fallback; nothing of it is committed
        try:
            stack.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as raised:
            return raised
        return exc

    def _one_at_a_time(self, files: list[tuple[bulk_state.FileView, LandedFile]], exc: WarehouseMemoryError) -> None:
        lean, self._lean, self._lowered = self._lowered, False, False  # the rest of the export: the whole limit
        _log.warning(
            "merging %d landed files in one transaction ran out of memory (%s); merging them one at a time%s "
            "(raise EHRSYNC_DUCKDB_MEMORY_LIMIT or lower EHRSYNC_BULK_MERGE_GROUP_BYTES to avoid the retry)",
            len(files),
            str(exc).split(":", 1)[0],
            " under the whole memory limit, and the rest of this export too" if lean else "",
        )
        self._merged, self._bytes = [], 0
        for f, landed in files:  # each recorded as soon as it commits: a later failure leaves it done and counted
            self._record([(f, landed, self.wh.upsert(landed))])

    def _record(self, merged: list[tuple[bulk_state.FileView, LandedFile, UpsertStats]]) -> None:
        for f, landed, counts in merged:
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
        drop_merged(self.landing_retention_days, [landed for _, landed, _ in merged])

    def __enter__(self) -> MergeGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.flush()
        elif self._open is not None:  # merged but not committed: roll back, the files stay ``landed``
            self._rollback(exc)
            self._merged = []
