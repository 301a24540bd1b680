"""Inter-process ``fcntl.flock`` with a timeout, one poll loop for every lock of ehrsync (the warehouse's
DuckDB file, a connection's token refresh, a connection's sync) so each waits, backs off and reports alike.

Callers keep their own error types: :func:`take_flock` answers False on timeout and the caller raises what
its layer means (WarehouseLockTimeoutError, RefreshLockTimeoutError, ConnectionBusyError). A holder may write
who it is into the lock file (:func:`write_holder`) so a waiter can name it (:func:`read_holder`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LockWait", "holder_stamp", "read_holder", "release_flock", "take_flock", "write_holder"]


@dataclass(frozen=True)
class LockWait:
    """How to wait for a busy lock: polls start at ``first_delay_s`` and double up to ``max_delay_s`` (±50 %
    when ``jitter``); ``on_busy`` is told first after ``report_after_s`` and then every ``report_every_s``."""

    timeout_s: float
    first_delay_s: float = 0.01
    max_delay_s: float = 0.5
    jitter: bool = False
    report_after_s: float = 0.0
    report_every_s: float = float("inf")


def take_flock(fd: int, *, exclusive: bool, wait: LockWait, on_busy: Callable[[float], None] | None = None) -> bool:
    """Take a shared or exclusive lock on ``fd``, polling until ``wait.timeout_s``; False when it stayed busy.
    ``on_busy(seconds_waited)`` lets the caller log who holds it while it waits."""
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    started = time.monotonic()
    deadline = started + wait.timeout_s
    next_report = started + wait.report_after_s if on_busy is not None else float("inf")
    delay = wait.first_delay_s
    while True:
        try:
            fcntl.flock(fd, mode)
            return True
        except BlockingIOError:
            now = time.monotonic()
            if now >= deadline:
                return False
            if on_busy is not None and now >= next_report:
                on_busy(now - started)
                next_report = now + wait.report_every_s
            pause = delay * (0.5 + random.random()) if wait.jitter else delay
            time.sleep(min(pause, max(deadline - now, 0.0), max(next_report - now, 0.0)))
            delay = min(delay * 2, wait.max_delay_s)


def release_flock(fd: int, *, clear: bool = False) -> None:
    """Let go of the lock; ``clear`` first empties the holder note (a later waiter must not blame us)."""
    if clear:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)


def holder_stamp() -> dict[str, Any]:
    """Who we are for a holder note: pid, host and since when (UTC)."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since}


def write_holder(fd: int, info: dict[str, Any]) -> None:
    """Replace the lock file's holder note with ``info`` (JSON)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def read_holder(fd: int) -> dict[str, Any] | None:
    """The holder note as its holder wrote it; None when empty or unreadable (it may be mid-write)."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
