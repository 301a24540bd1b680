"""Bounded parallel downloads of manifest files (BDX-18): a thread pool per job, a shared cap per host."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from connectors.bulk.client import BulkClient
from connectors.bulk.file_limits import DEFAULT_MAX_FILE_BYTES
from connectors.bulk.manifest import ManifestItem
from connectors.errors import EhrSyncError

__all__ = ["DEFAULT_PER_JOB", "FileOutcome", "HostConcurrencyLimiter", "download_items"]

logger = logging.getLogger(__name__)

DEFAULT_PER_JOB = 4


class HostConcurrencyLimiter:
    """At most ``per_host`` concurrent downloads per host, shared across jobs that share this object."""

    def __init__(self, per_host: int = DEFAULT_PER_JOB) -> None:
        if per_host < 1:
            raise ValueError("per_host must be at least 1")
        self.per_host = per_host
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            semaphore = self._semaphores.setdefault(host, threading.BoundedSemaphore(self.per_host))
        with semaphore:
            yield


@dataclass(frozen=True)
class FileOutcome:
    """Result for one manifest item: the landed path, or the typed error that stopped it."""

    item: ManifestItem
    path: Path | None
    error: EhrSyncError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def download_items(
    bulk: BulkClient,
    items: Sequence[ManifestItem],
    dest_dir: Path,
    *,
    requires_token: bool,
    max_workers: int = DEFAULT_PER_JOB,
    hosts: HostConcurrencyLimiter | None = None,
    max_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> list[FileOutcome]:
    """Download every item into ``dest_dir`` (``NNNN.Type.ndjson``), in manifest order.

    One failed file does not stop the others: the caller decides (a BulkFileExpiredError means re-run
    from the same ``_since``, BDX-19). Non-ehrsync exceptions (bugs, disk full) propagate.
    """
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    limiter = hosts or HostConcurrencyLimiter(max_workers)

    def fetch(index: int, item: ManifestItem) -> FileOutcome:
        dest = dest_dir / f"{index:04d}.{item.type}.ndjson"
        try:
            with limiter.slot(item.url):
                return FileOutcome(item, bulk.download(item.url, dest, requires_token, max_bytes=max_bytes), None)
        except EhrSyncError as exc:
            logger.warning("bulk file failed", extra={"type": item.type, "error": exc.code})
            return FileOutcome(item, None, exc)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bulk-dl") as pool:
        futures = [pool.submit(fetch, index, item) for index, item in enumerate(items)]
        return [future.result() for future in futures]
