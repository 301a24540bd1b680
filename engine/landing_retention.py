"""Landing-file retention: delete landing Parquet files the warehouse no longer needs, after N days.

Every sync leaves its landing files (``<landing>/<connection>/<Type>/<run>-<seq>.parquet`` and the quarantine
Parquet beside them) once merged; nothing reads them again. ``prune_landing`` deletes those older than
``keep_days`` (``EHRSYNC_LANDING_RETENTION_DAYS``, 0: every merged file) and never one the warehouse still needs:

- a file named by a *pending* landing handoff (``sync_cursors.pending``: landed, its upsert not committed yet);
- a file named by a Bulk export that can still resume (``bulk_job_files.landed_path`` of a ``polling`` or
  ``downloading`` job: a ``landed`` file waits for its upsert);
- any file of a connection whose pending handoff cannot be read (nothing of that connection is deleted then).

It holds each connection's lock while it looks (``connection_lock``, not waiting: a busy connection is skipped and
pruned by the next run), so a landing step between writing its file and recording its handoff is never raced.
Temporary files (``.*.tmp``) are the connection's next run's business (``engine.residue``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import select

from engine.bulk_state import ACTIVE
from engine.connection_lock import ConnectionBusyError, connection_lock
from engine.errors import HandoffError
from engine.handoff import LandingHandoff, landed_from_json
from engine.models import BulkJob, BulkJobFile, SyncCursor, utcnow
from store import AppDatabase
from warehouse.landed import LandedFile, quarantine_path_for

__all__ = [
    "LandingPruneReport",
    "drop_merged",
    "needed_landing_files",
    "prune_landing",
]

_log = logging.getLogger(__name__)
_HOLDER = "landing-retention"


@dataclass
class LandingPruneReport:
    """Counts of one retention run over the landing zone."""

    connections: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    files_needed: int = 0  # not merged yet (pending handoff, resumable Bulk export): kept whatever their age
    files_recent: int = 0  # merged but younger than the retention period
    connections_busy: int = 0
    connections_unreadable: int = 0

    def counts(self) -> dict[str, int]:
        return dict(vars(self))


def needed_landing_files(db: AppDatabase, connection_id: str) -> set[Path] | None:
    """Landing files (and their quarantine files) of the connection not merged yet; None when a pending
    handoff cannot be read, so the caller keeps every file of the connection."""
    needed: set[Path] = set()
    with db.session() as session:
        pending = session.scalars(
            select(SyncCursor.pending).where(
                SyncCursor.connection_id == connection_id, SyncCursor.pending_run_id.is_not(None)
            )
        ).all()
        bulk = session.scalars(
            select(BulkJobFile.landed_path)
            .join(BulkJob, BulkJob.id == BulkJobFile.job_id)
            .where(
                BulkJob.connection_id == connection_id, BulkJob.status.in_(ACTIVE), BulkJobFile.landed_path.is_not(None)
            )
        ).all()
    try:
        files = [f for blob in pending for f in LandingHandoff.from_json(blob or {}).files]
        files += [landed_from_json(_json(text), "bulk_job_files.landed_path") for text in bulk]
    except HandoffError as exc:
        _log.warning("landing retention keeps every file of connection %s: %s", connection_id, exc)
        return None
    for landed in files:
        path = Path(landed.path)
        needed.update({path, quarantine_path_for(path)})
        if landed.quarantine_path is not None:
            needed.add(Path(landed.quarantine_path))
    return {p.resolve() for p in needed}


def _json(text: str | None) -> object:
    try:
        return orjson.loads(text or "null")
    except orjson.JSONDecodeError as exc:
        raise HandoffError(f"bulk_job_files.landed_path is not JSON: {exc}") from None


def drop_merged(keep_days: int | None, files: Iterable[LandedFile]) -> int:
    """``EHRSYNC_LANDING_RETENTION_DAYS=0``: delete landed files (and their quarantine files) as soon as the merge
    that absorbed them committed; called by the steps after that commit. Any other value leaves them to
    ``prune_landing``. A crash before this call leaves the files for the next pruning."""
    if keep_days != 0:
        return 0
    removed = 0
    for landed in files:
        path = Path(landed.path)
        for leftover in {
            path,
            quarantine_path_for(path),
            *([Path(landed.quarantine_path)] if landed.quarantine_path else []),
        }:
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
    return removed


def prune_landing(
    db: AppDatabase, landing_root: Path, *, keep_days: int, now: datetime | None = None
) -> LandingPruneReport:
    """Delete merged landing files older than ``keep_days`` days (0: all merged files), connection by connection."""
    if keep_days < 0:
        raise ValueError("keep_days must be 0 or more")
    cutoff = ((now or utcnow()) - timedelta(days=keep_days)).timestamp()
    report = LandingPruneReport()
    root = Path(landing_root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    for folder in folders:
        report.connections += 1
        try:
            with connection_lock(root, folder.name, _HOLDER, wait_s=0.0):
                _prune_connection(db, folder, cutoff, report)
        except ConnectionBusyError:
            report.connections_busy += 1
    _log.info("landing retention (%d days): %s", keep_days, report.counts())
    return report


def _prune_connection(db: AppDatabase, folder: Path, cutoff: float, report: LandingPruneReport) -> None:
    needed = needed_landing_files(db, folder.name)
    if needed is None:
        report.connections_unreadable += 1
        return
    for path in sorted(folder.glob("*/*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.resolve() in needed:
            report.files_needed += 1
        elif stat.st_mtime >= cutoff:
            report.files_recent += 1
        else:
            path.unlink(missing_ok=True)
            report.files_deleted += 1
            report.bytes_deleted += stat.st_size
    for type_dir in [*folder.iterdir(), folder]:
        if type_dir.is_dir() and not any(type_dir.iterdir()):
            type_dir.rmdir()  # an empty folder goes too; a later landing recreates it
