"""Run a command in its own process group until a stop signal, then stop it and every process it started.

``dagster dev`` starts a webserver, a daemon and code servers; killing only the parent leaves them running. So
the command gets a session of its own, SIGINT, SIGTERM and SIGHUP to us all mean "stop", and stopping escalates
SIGINT → SIGTERM → SIGKILL over the whole group (plus any descendant that left it) within bounded waits.

A shell that starts us in the background (``ehrsync ui &``) sets SIGINT to "ignored", and a child inherits that:
installing our handler before the child starts gives it the default disposition back, so the SIGINT we send later
reaches it. Any other stop signal that is ignored stays ignored, for us and the command: ``nohup`` ignores SIGHUP so
that closing the terminal does not stop the job.

The handler only records the signal. Raising from it could land between fork and ``Popen`` returning (the command
would run on unsupervised) or in the middle of the shutdown (a second ``kill`` would end it with a traceback).
Blocking the signals around ``Popen`` is no option: the command would inherit the blocked mask and never see SIGINT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import FrameType

import psutil

__all__ = ["STOP_SIGNALS", "run_until_stopped", "stop_process_tree"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# (signal, seconds to wait for the tree to go after sending it); SIGKILL last, it cannot be refused.
_ESCALATION = ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))
# How often the wait for the command looks at the recorded signal (the wait itself resumes after a handler).
_POLL_S = 0.2


class _StopFlag:
    """Signal handler that records the first stop signal; later ones change nothing (the shutdown is bounded)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum


def _signals_to_handle() -> list[int]:
    """The stop signals not ignored now, plus SIGINT (ignored for background jobs, yet what stops the command)."""
    return [sig for sig in STOP_SIGNALS if sig == signal.SIGINT or signal.getsignal(sig) != signal.SIG_IGN]


def run_until_stopped(argv: Sequence[str], env: Mapping[str, str], *, stop_after_s: float | None = None) -> int:
    """Run ``argv`` in a new session until it exits, a stop signal arrives or ``stop_after_s`` passes.

    Returns the command's exit code when it ended by itself, else 0 once it and its descendants are gone.
    """
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop) for sig in _signals_to_handle()}
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(list(argv), env=dict(env), start_new_session=True)
        code = _wait(proc, stop, stop_after_s)
        if code is not None:
            return code
        reason = "stop_after_s elapsed" if stop.signum is None else signal.Signals(stop.signum).name
        logger.info("stopping the process group of %s (%s)", argv[0], reason)
        return 0
    finally:
        try:
            if proc is not None:
                stop_process_tree(proc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _wait(proc: subprocess.Popen[bytes], stop: _StopFlag, stop_after_s: float | None) -> int | None:
    """The command's exit code, or None once a stop signal was recorded or ``stop_after_s`` passed."""
    deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
    while stop.signum is None:
        step = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
        if step <= 0:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=step)
    return None


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
