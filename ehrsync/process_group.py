"""Run a command in its own process group until a stop signal, then stop it and every process it started.

``dagster dev`` starts a webserver, a daemon and code servers; killing only the parent leaves them running. So
the command gets a session of its own, SIGINT, SIGTERM and SIGHUP to us all mean "stop", and stopping escalates
SIGINT → SIGTERM → SIGKILL over the whole group (plus any descendant that left it) within bounded waits.

A shell that starts us in the background (``ehrsync ui &``) sets SIGINT to "ignored", and a child inherits that:
installing our handlers before the child starts gives it the default disposition back, so the SIGINT we send later
reaches it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

import psutil

__all__ = ["STOP_SIGNALS", "run_until_stopped", "stop_process_tree"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# (signal, seconds to wait for the tree to go after sending it); SIGKILL last, it cannot be refused.
_ESCALATION = ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))


class _StopRequested(Exception):
    """One of ``STOP_SIGNALS`` arrived while the command ran."""


def _request_stop(signum: int, _frame: object) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def run_until_stopped(argv: Sequence[str], env: Mapping[str, str], *, stop_after_s: float | None = None) -> int:
    """Run ``argv`` in a new session until it exits, a stop signal arrives or ``stop_after_s`` passes.

    Returns the command's exit code when it ended by itself, else 0 once it and its descendants are gone.
    """
    previous = {sig: signal.signal(sig, _request_stop) for sig in STOP_SIGNALS}
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(list(argv), env=dict(env), start_new_session=True)
        return proc.wait(timeout=stop_after_s)
    except (_StopRequested, subprocess.TimeoutExpired) as why:
        reason = str(why) if isinstance(why, _StopRequested) else "stop_after_s elapsed"
        logger.info("stopping the process group of %s (%s)", argv[0], reason)
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second signal must not cut the shutdown short; it is bounded anyway
            signal.signal(sig, signal.SIG_IGN)
        try:
            if proc is not None:
                stop_process_tree(proc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def stop_process_tree(proc: subprocess.Popen[bytes], escalation: Sequence[tuple[int, float]] = _ESCALATION) -> None:
    """Signal the group of ``proc`` (and descendants outside it), stronger each time, until none is left."""
    tracked = _descendants(proc.pid)  # before signalling: a dead parent no longer names its children
    for sig, wait_s in escalation:
        alive = _alive(proc, tracked)
        if not alive:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for process in alive:  # those that moved to a group of their own
            with contextlib.suppress(psutil.Error):
                if os.getpgid(process.pid) != proc.pid:
                    process.send_signal(sig)
        deadline = time.monotonic() + wait_s
        while _alive(proc, tracked) and time.monotonic() < deadline:
            time.sleep(0.2)
    left = _alive(proc, tracked)
    if left:
        logger.warning("processes still running after SIGKILL: %s", [p.pid for p in left])


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _alive(proc: subprocess.Popen[bytes], tracked: list[psutil.Process]) -> list[psutil.Process]:
    """Running members of ``proc``'s group plus tracked descendants (zombies awaiting their reaper do not count)."""
    proc.poll()  # reap our own child, so it does not linger as a zombie
    found = {p.pid: p for p in tracked}
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == proc.pid:
                found.setdefault(process.pid, process)
    return [p for p in found.values() if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
