"""stop_process_tree escalates SIGINT → SIGTERM → SIGKILL until the command and everything it started are gone,
including a descendant that ignores both polite signals and one that left the group (own session)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import psutil

from ehrsync.process_group import stop_process_tree

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
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    time.sleep(0.3)
    begun = time.monotonic()
    stop_process_tree(proc, ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)))
    assert time.monotonic() - begun < 5
    assert proc.returncode is not None and proc.returncode != -signal.SIGKILL
