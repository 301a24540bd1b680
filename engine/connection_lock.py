"""One sync of a connection at a time, whatever started it: a cross-process lock per connection.

Dagster's run limits keep two runs of one partition apart, but the engine is also called by the CLI, by
``run_sync_now`` and by tests, and a second concurrent sync of one connection would race on its landing files,
its cursors and its run rows. Every engine entry point for a connection step (the landing and warehouse
steps, the reference step, a Bulk export, deletes reconciliation) holds this lock: an ``fcntl.flock`` on
``<landing>/.locks/<sha256(connection)>.lock`` (one host: the state directory is local, as DuckDB needs). A second
caller waits up to ``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS`` (default 30), then gets ``ConnectionBusyError``
naming the holder (its run id and pid, written into the lock file). The lock is re-entrant within one thread,
so a step holding it may call another entry point. A killed holder's lock goes with its process.

A holder also locks a flag file beside it (``<sha256>.held``), which is what ``busy_holder`` (the weekly
reconcile schedule's probe) tries: a probe never touches the lock a sync waits on, so it cannot make a sync that
waits for nothing (``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS=0``) fail ``connection_busy``. Only probes contend with
a holder for the flag, each letting go of it at once, so a holder's wait for it is as short as their hold. A
holder that cannot open or lock the flag (a ``.locks`` folder it cannot write to, a flag another user made) holds
the lock without it, with a warning: the probe then finds the connection free, and the run it asks for waits.

Taking the lock is also when the connection's killed runs are tidied (``engine.residue``): no live
run of the connection can own a temporary file then.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.filelock import LockWait, holder_stamp, read_holder, release_flock, take_flock, write_holder
from engine.env_numbers import whole_number
from engine.errors import SyncError
from warehouse import lock_owner

if TYPE_CHECKING:  # the settings read the lock wait without loading a run's environment (issue 14)
    from engine.environment import SyncEnvironment

__all__ = [
    "DEFAULT_LOCK_WAIT_S",
    "LOCK_WAIT_ENV",
    "MAX_LOCK_WAIT_S",
    "ConnectionBusyError",
    "busy_holder",
    "connection_lock",
    "hold_connection",
    "lock_path",
    "lock_wait_seconds",
]

_log = logging.getLogger(__name__)
LOCK_WAIT_ENV = "EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_S = 30.0
MAX_LOCK_WAIT_S = 86_400


class ConnectionBusyError(SyncError):
    """Another sync of the same connection holds its lock (the message names that run and process)."""

    code = "connection_busy"


@dataclass
class _Held:
    fd: int
    thread: int
    depth: int


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def lock_wait_seconds(env: Mapping[str, str] | None = None) -> float:
    """The configured wait; a malformed value raises ``PipelineConfigurationError`` naming the variable."""
    source = os.environ if env is None else env
    if not source.get(LOCK_WAIT_ENV, "").strip():  # unset or empty: the default wait
        return DEFAULT_LOCK_WAIT_S
    return float(whole_number(source, LOCK_WAIT_ENV, 0, 0, MAX_LOCK_WAIT_S, "seconds"))


def lock_path(landing_root: Path, connection_id: str) -> Path:
    """The lock file of a connection (hashed: a connection id is never used as a file name as is)."""
    digest = hashlib.sha256(connection_id.encode()).hexdigest()[:32]
    return Path(landing_root) / ".locks" / f"{digest}.lock"


def _flag_path(lock: Path) -> Path:
    """The flag file a holder of ``lock`` also locks, for ``busy_holder`` to try instead of ``lock`` itself."""
    return lock.with_suffix(".held")


def _holder(fd: int) -> str:
    """Who holds the lock, as written by the holder (best effort: the file may be mid-write)."""
    info = read_holder(fd)
    if info is None:
        return "an unknown process"
    return f"run {info.get('run_id')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


def _acquire(path: Path, connection_id: str, run_id: str, wait_s: float) -> tuple[int, int]:
    """The lock's and its flag's descriptors, both held (the holder note written before the flag is taken; the
    flag's -1 when it could not be taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def busy(_waited: float) -> None:
        _log.info("run %s waits for connection %s: %s holds it", run_id, connection_id, _holder(fd))

    if not take_flock(fd, exclusive=True, wait=LockWait(wait_s, 0.01, 0.5), on_busy=busy):
        holder = _holder(fd)
        os.close(fd)
        raise ConnectionBusyError(
            f"connection {connection_id} is busy: {holder} is syncing it; run {run_id} waited "
            f"{wait_s:.0f}s ({LOCK_WAIT_ENV}) and did not start"
        )
    try:
        write_holder(fd, {"run_id": run_id, **holder_stamp()})
        return fd, _take_flag(_flag_path(path), connection_id)
    except BaseException:
        release_flock(fd, clear=True)
        os.close(fd)
        raise


def _take_flag(flag_path: Path, connection_id: str) -> int:
    """The flag's descriptor, locked; -1 when it cannot be opened or locked (a folder the holder cannot write to, a
    flag another user made): the flag serves only the reconcile probe, which then finds the connection free and
    asks for a run that waits for the lock, so the sync goes on without it rather than failing on it."""
    flag = -1
    try:
        flag = os.open(flag_path, os.O_RDWR | os.O_CREAT, 0o644)
        # No sync waits here (they wait for the lock, held now): only a probe, for the microseconds of its try.
        fcntl.flock(flag, fcntl.LOCK_EX)
    except BaseException as exc:
        if flag >= 0:
            os.close(flag)
        if not isinstance(exc, OSError):
            raise
        _log.warning("connection %s: its lock is held without its flag, which failed (%s)", connection_id, exc)
        return -1
    return flag


def busy_holder(landing_root: Path, connection_id: str) -> str | None:
    """Who holds the connection's lock now, as ``ConnectionBusyError`` names them; None when it is free. For a
    schedule that should not ask for a run that would only find the connection busy (the weekly reconcile's).
    Without waiting, and without touching the lock itself: a shared lock on its holder's flag, let go at once (a
    holder taking its flag meanwhile waits microseconds; a sync starting meanwhile takes the lock as if no probe
    ran), and no holder note written."""
    lock = lock_path(landing_root, connection_id)
    try:
        flag = os.open(_flag_path(lock), os.O_RDONLY)
    except FileNotFoundError:
        return None  # never locked
    try:
        if take_flock(flag, exclusive=False, wait=LockWait(0.0)):
            release_flock(flag)
            return None
    finally:
        os.close(flag)
    fd = os.open(lock, os.O_RDONLY)  # the flag's holder wrote its note here before taking the flag
    try:
        return _holder(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def connection_lock(
    landing_root: Path, connection_id: str, run_id: str, *, wait_s: float | None = None
) -> Iterator[bool]:
    """Hold the connection's lock; yields True when this call took it, False when this thread already held it."""
    thread = threading.get_ident()
    with _guard:
        held = _held.get(connection_id)
        if held is not None and held.thread == thread:
            held.depth += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield False
        finally:
            with _guard:
                _held[connection_id].depth -= 1
        return
    wait = lock_wait_seconds() if wait_s is None else wait_s
    fd, flag = _acquire(lock_path(landing_root, connection_id), connection_id, run_id, wait)
    with _guard:
        _held[connection_id] = _Held(fd, thread, 1)
    try:
        yield True
    finally:
        with _guard:
            del _held[connection_id]
        try:
            if flag >= 0:  # first: a probe finding the flag free finds the lock free, or let go of at once
                try:
                    release_flock(flag)
                finally:
                    os.close(flag)
        finally:  # the lock itself whatever the flag did: a long-lived process must not keep it
            release_flock(fd, clear=True)
            os.close(fd)


@contextlib.contextmanager
def hold_connection(env: SyncEnvironment, connection_id: str, run_id: str) -> Iterator[None]:
    """The entry points' form: hold the connection's lock and, when this call took it, remove what killed runs
    of the connection left in the landing zone."""
    with (
        connection_lock(env.zone.root, connection_id, run_id, wait_s=env.lock_wait_s) as took,
        lock_owner(f"run {run_id} of connection {connection_id}"),  # named by the warehouse's lock file too
    ):
        if took:
            from engine.residue import remove_orphans  # the app database's models: not for the settings' lock wait

            remove_orphans(env.db, env.zone.root, connection_id)
        yield
