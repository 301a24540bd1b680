"""Inter-process ``fcntl.flock`` with a timeout: DuckDB admits one read-write process per file, so ehrsync's
writers queue here instead of failing on DuckDB's own lock.

The exclusive holder writes who it is (pid, host, since when, and an owner label such as a run id when the
caller gave one) into the lock file, and clears it before letting go; a caller that waits logs a line at least
every ``log_every_s`` seconds naming that holder, so a stuck sync says what it is waiting for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from warehouse.errors import WarehouseLockTimeoutError

__all__ = ["LOCK_LOG_EVERY_S", "file_lock", "lock_holder", "lock_owner"]

logger = logging.getLogger(__name__)
LOCK_LOG_EVERY_S = 10.0
_OWNER: ContextVar[str | None] = ContextVar("ehrsync_lock_owner", default=None)


@contextlib.contextmanager
def lock_owner(label: str) -> Iterator[None]:
    """Name the work of this thread (e.g. ``run <id> of connection <id>``) in the locks it takes meanwhile, for
    callers that open the warehouse without knowing the run (the sync engine sets it per connection step)."""
    token = _OWNER.set(label)
    try:
        yield
    finally:
        _OWNER.reset(token)


def _exited(pid: object, host: object) -> bool:
    """Whether ``pid`` on ``host`` is known to be gone (only this host's processes can be checked)."""
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def lock_holder(fd: int) -> str:
    """Who holds the lock as its exclusive holder wrote it; readers (shared holders) write nothing. A holder killed
    before clearing the file (SIGKILL) is not blamed: its pid is gone, so readers hold the lock now."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw) if raw else None
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict):
        return "readers or a process that did not say who it is"
    if _exited(info.get("pid"), info.get("host")):
        return f"readers (previous holder pid {info.get('pid')} exited)"
    owner = f"{info.get('owner')}, " if info.get("owner") else ""
    return f"{owner}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


def _write_holder(fd: int, owner: str | None) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "owner": owner}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)


@contextlib.contextmanager
def file_lock(
    path: Path,
    *,
    exclusive: bool,
    timeout_s: float,
    log_every_s: float = LOCK_LOG_EVERY_S,
    owner: str | None = None,
) -> Iterator[None]:
    """Hold a shared or exclusive lock on ``path`` (created if needed), polling with backoff until ``timeout_s``;
    while waiting, log who holds it every ``log_every_s`` seconds."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        if exclusive:
            raise
        yield  # a read-only analyst on a read-only directory: nobody can write there, nothing to guard
        return
    try:
        _acquire(fd, path, exclusive=exclusive, timeout_s=timeout_s, log_every_s=log_every_s)
        if exclusive:
            _write_holder(fd, owner or _OWNER.get())
        try:
            yield
        finally:
            if exclusive:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, *, exclusive: bool, timeout_s: float, log_every_s: float) -> None:
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    started = time.monotonic()
    deadline = started + timeout_s
    next_log = started + log_every_s
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, mode)
            return
        except BlockingIOError:
            now = time.monotonic()
            if now >= deadline:
                raise WarehouseLockTimeoutError(
                    f"could not lock {path.name} within {timeout_s:.0f}s (held by {lock_holder(fd)})"
                ) from None
            if now >= next_log:
                logger.info(
                    "waiting %.0fs so far for the %s lock %s: held by %s",
                    now - started,
                    "write" if exclusive else "read",
                    path.name,
                    lock_holder(fd),
                )
                next_log = now + log_every_s
            time.sleep(min(delay * (0.5 + random.random()), max(deadline - now, 0.0), max(next_log - now, 0.0)))
            delay = min(delay * 2, 0.25)
