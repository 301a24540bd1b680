"""Inter-process ``fcntl.flock`` with a timeout: DuckDB admits one read-write process per file, so ehrsync's
writers queue here instead of failing on DuckDB's own lock.

The exclusive holder writes who it is (pid, host, since when, and an owner label such as a run id when the
caller gave one) into the lock file, and clears it before letting go; a caller that waits logs a line at least
every ``log_every_s`` seconds naming that holder, so a stuck sync says what it is waiting for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from connectors.filelock import LockWait, holder_stamp, read_holder, release_flock, take_flock, write_holder
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
    info = read_holder(fd)
    if info is None:
        return "readers or a process that did not say who it is"
    if _exited(info.get("pid"), info.get("host")):
        return f"readers (previous holder pid {info.get('pid')} exited)"
    owner = f"{info.get('owner')}, " if info.get("owner") else ""
    return f"{owner}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


def _write_holder(fd: int, owner: str | None) -> None:
    with contextlib.suppress(OSError):
        write_holder(fd, {**holder_stamp(), "owner": owner})


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
            release_flock(fd, clear=exclusive)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, *, exclusive: bool, timeout_s: float, log_every_s: float) -> None:
    def busy(waited: float) -> None:
        kind = "write" if exclusive else "read"
        logger.info("waiting %.0fs so far for the %s lock %s: held by %s", waited, kind, path.name, lock_holder(fd))

    wait = LockWait(timeout_s, 0.005, 0.25, jitter=True, report_after_s=log_every_s, report_every_s=log_every_s)
    if not take_flock(fd, exclusive=exclusive, wait=wait, on_busy=busy):
        raise WarehouseLockTimeoutError(
            f"could not lock {path.name} within {timeout_s:.0f}s (held by {lock_holder(fd)})"
        )
