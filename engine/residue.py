"""What a killed run of a connection leaves on disk, removed by the connection's next run.

A SIGKILLed (or OOM-killed) sync never reaches its ``finally`` blocks: the landing writer's temporary Parquet
files (``.<name>.<token>.tmp`` beside the landing files of ``<landing>/<connection>/<Type>/``), the Bulk
download directories (``<landing>/.bulk-tmp/<job id>/``) and the attachment download directories
(``<landing>/.attachment-tmp/<connection digest>/<run dir>/``, ``attachment_tmp_root``) stay behind.
``remove_orphans`` deletes the connection's ones. It must only run while the caller holds the connection's lock
(``connection_lock``): then no live run of that connection owns any of them. As a second guard, anything
modified in the last ``min_age_s`` seconds is left alone (a writer that does not take the lock, e.g. an older
ehrsync).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from engine.models import BulkJob
from store import AppDatabase

__all__ = ["ATTACHMENT_TMP_DIR", "DEFAULT_MIN_AGE_S", "Removed", "attachment_tmp_root", "remove_orphans"]

_log = logging.getLogger(__name__)
DEFAULT_MIN_AGE_S = 60.0
_TMP_GLOB = ".*.tmp"
ATTACHMENT_TMP_DIR = ".attachment-tmp"


@dataclass(frozen=True)
class Removed:
    """What ``remove_orphans`` deleted: temporary landing files, Bulk and attachment download directories."""

    files: int = 0
    dirs: int = 0
    attachment_dirs: int = 0


def attachment_tmp_root(landing_root: Path, connection_id: str) -> Path:
    """Where a run of the connection downloads attachments before they move into the attachment store: under the
    state directory (not the system temp dir) and per connection, so the connection's next run finds what a killed
    run left (hashed like the lock file: a connection id is never used as a file name as is)."""
    digest = hashlib.sha256(connection_id.encode()).hexdigest()[:32]
    return Path(landing_root) / ATTACHMENT_TMP_DIR / digest


def _old(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _newest_mtime(directory: Path) -> float:
    newest = 0.0
    for p in (directory, *directory.rglob("*")):
        try:
            newest = max(newest, p.stat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def _landing_tmp_files(landing_root: Path, connection_id: str, cutoff: float) -> int:
    removed = 0
    base = landing_root / connection_id
    if not base.is_dir():
        return 0
    for tmp in base.glob(f"*/{_TMP_GLOB}"):
        if tmp.is_file() and _old(tmp, cutoff):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _bulk_tmp_dirs(db: AppDatabase, landing_root: Path, connection_id: str, cutoff: float) -> int:
    """``.bulk-tmp/<job id>`` of this connection's jobs (the bulk engine recreates the one it resumes)."""
    root = landing_root / ".bulk-tmp"
    if not root.is_dir():
        return 0
    with db.session() as session:
        jobs = set(session.scalars(select(BulkJob.id).where(BulkJob.connection_id == connection_id)).all())
    removed = 0
    for directory in root.iterdir():
        if directory.name in jobs and directory.is_dir() and _newest_mtime(directory) < cutoff:
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed


def _attachment_tmp_dirs(landing_root: Path, connection_id: str, cutoff: float) -> int:
    root = attachment_tmp_root(landing_root, connection_id)
    if not root.is_dir():
        return 0
    removed = 0
    for directory in root.iterdir():
        if directory.is_dir() and _newest_mtime(directory) < cutoff:
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
        elif directory.is_file() and _old(directory, cutoff):
            directory.unlink(missing_ok=True)
            removed += 1
    return removed


def remove_orphans(
    db: AppDatabase, landing_root: Path, connection_id: str, *, min_age_s: float = DEFAULT_MIN_AGE_S
) -> Removed:
    """Delete the connection's leftovers of killed runs; call only while holding its ``connection_lock``."""
    cutoff = time.time() - min_age_s
    root = Path(landing_root)
    removed = Removed(
        files=_landing_tmp_files(root, connection_id, cutoff),
        dirs=_bulk_tmp_dirs(db, root, connection_id, cutoff),
        attachment_dirs=_attachment_tmp_dirs(root, connection_id, cutoff),
    )
    if removed.files or removed.dirs or removed.attachment_dirs:
        _log.info(
            "removed what killed runs of connection %s left: %d temporary landing files, %d bulk download dirs, "
            "%d attachment download dirs",
            connection_id,
            removed.files,
            removed.dirs,
            removed.attachment_dirs,
        )
    return removed
