"""Inter-process ``fcntl.flock`` with a timeout: DuckDB admits one read-write process per file, so ehrsync's
writers queue here instead of failing on DuckDB's own lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

from warehouse.errors import WarehouseLockTimeoutError

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(path: Path, *, exclusive: bool, timeout_s: float) -> Iterator[None]:
    """Hold a shared or exclusive lock on ``path`` (created if needed), polling with backoff until ``timeout_s``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        if exclusive:
            raise
        yield  # a read-only analyst on a read-only directory: nobody can write there, nothing to guard
        return
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WarehouseLockTimeoutError(
                        f"could not lock {path.name} within {timeout_s:.0f}s (another writer holds it)"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
