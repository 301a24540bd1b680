"""stop_process_tree escalates SIGINT → SIGTERM → SIGKILL until the command and everything it started are gone,
including a descendant that ignores both polite signals and one that left the group (own session); run_until_stopped
leaves an ignored SIGHUP ignored (``nohup``) and survives stop signals at awkward moments."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from ehrsync.process_group import run_until_stopped, stop_process_tree

# The processes these tests start inherit our stop signals: start them as from a terminal, however pytest runs.
pytestmark = pytest.mark.usefixtures("stop_signals_as_from_a_terminal")

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]

# A parent that ignores SIGINT and starts two stubborn children: one in its group, one in a session of its own.
_TREE = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    stubborn += "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_stubborn_tree_is_gone_within_the_escalation_bound() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _TREE], start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        started = psutil.Process(proc.pid).children(recursive=True)
        assert len(started) == 2
        begun = time.monotonic()
        stop_process_tree(proc, ((signal.SIGINT, 1.0), (signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)))
        assert time.monotonic() - begun < 10
        assert proc.poll() is not None
        _gone, alive = psutil.wait_procs(started, timeout=5)
        assert not alive, [p.pid for p in alive]
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            child.kill()
        proc.kill()
        proc.wait()


def test_polite_command_stops_on_sigint_without_escalation() -> None:
    proc = subprocess.Popen(_SLEEPER, start_new_session=True)
    time.sleep(0.3)
    begun = time.monotonic()
    stop_process_tree(proc, ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)))
    assert time.monotonic() - begun < 5
    assert proc.returncode is not None and proc.returncode != -signal.SIGKILL


# run_until_stopped over the sleeper, with the stop signals named on the command line ignored beforehand.
_RUN = textwrap.dedent(
    """
    import signal, sys
    from ehrsync.process_group import run_until_stopped
    for name in sys.argv[1:]:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    sys.exit(run_until_stopped([sys.executable, "-c", "import time; time.sleep(600)"], {}))
    """
)


def _start_runner(*ignored: str) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    """A Python process running ``run_until_stopped`` (``ignored`` signals set to SIG_IGN first) and its sleeper,
    once the sleeper runs the sleep (exec done, so its signal dispositions are final)."""
    proc = subprocess.Popen([sys.executable, "-c", _RUN, *ignored], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children():
            if "time.sleep(600)" in " ".join(child.cmdline()):
                return proc, child
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "runner exited"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the sleeper did not start in 30 s")


def _ignores(pid: int, sig: int) -> bool:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return bool(int(fields["SigIgn"], 16) >> (sig - 1) & 1)


def _stop_runner(proc: subprocess.Popen[bytes], sleeper: psutil.Process) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        sleeper.kill()
    proc.kill()
    proc.wait()


def test_sighup_ignored_by_nohup_stays_ignored_and_sigint_comes_back() -> None:
    """``nohup ehrsync ui &``: SIGHUP (terminal closed) neither stops us nor the command; SIGINT, ignored by ``&``,
    is the command's default again so the stop we send reaches it."""
    proc, sleeper = _start_runner("SIGHUP", "SIGINT")
    try:
        assert _ignores(sleeper.pid, signal.SIGHUP)
        assert not _ignores(sleeper.pid, signal.SIGINT)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "runner exited on SIGHUP"
        assert sleeper.is_running()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _gone, alive = psutil.wait_procs([sleeper], timeout=5)
        assert not alive
    finally:
        _stop_runner(proc, sleeper)


def test_two_sigterms_in_quick_succession_stop_cleanly() -> None:
    proc, sleeper = _start_runner()
    try:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and b"Error" not in proc.stderr.read()
        _gone, alive = psutil.wait_procs([sleeper], timeout=5)
        assert not alive
    finally:
        _stop_runner(proc, sleeper)


def _recording_popen(monkeypatch: pytest.MonkeyPatch, *, then_signal: bool) -> list[subprocess.Popen[bytes]]:
    """Record each ``Popen`` the module starts; ``then_signal`` sends us SIGTERM after the fork, before ``Popen``
    returns to the caller (the window a ``kill`` can hit)."""
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real(*args, **kwargs))
        if then_signal:
            os.kill(os.getpid(), signal.SIGTERM)
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


def _assert_stopped(started: list[subprocess.Popen[bytes]]) -> None:
    assert len(started) == 1
    try:
        assert started[0].poll() is not None, "the command runs on unsupervised"
    finally:
        if started[0].poll() is None:
            started[0].kill()
            started[0].wait()


def test_stop_signal_before_popen_returns_still_stops_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    started = _recording_popen(monkeypatch, then_signal=True)
    assert run_until_stopped(_SLEEPER, os.environ, stop_after_s=60) == 0
    _assert_stopped(started)


def test_second_signal_during_the_shutdown_is_harmless(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A second ``kill`` while the command is being stopped (here: as the shutdown logs) must not escape."""

    class SignalOnStop(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("stopping"):
                os.kill(os.getpid(), signal.SIGTERM)

    started = _recording_popen(monkeypatch, then_signal=False)
    caplog.set_level(logging.INFO, logger="ehrsync.process_group")
    hook = SignalOnStop()
    logging.getLogger("ehrsync.process_group").addHandler(hook)
    try:
        assert run_until_stopped(_SLEEPER, os.environ, stop_after_s=0.5) == 0
    finally:
        logging.getLogger("ehrsync.process_group").removeHandler(hook)
    _assert_stopped(started)
