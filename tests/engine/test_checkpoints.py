"""The crash hook really kills the process with SIGKILL at the named point (and only there)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from engine.checkpoints import CRASH_ENV, POINTS

SCRIPT = """
from engine.checkpoints import checkpoint
for i in range(3):
    checkpoint("rest.page_landed")
    print("passed", i, flush=True)
checkpoint("rest.landed")
print("done", flush=True)
"""


def _run(target: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if target is not None:
        env[CRASH_ENV] = target
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("target", "passed", "killed"),
    [
        (None, 3, False),
        ("rest.page_landed", 0, True),
        ("rest.page_landed:2", 1, True),
        ("rest.landed", 3, True),
        ("bulk.completed", 3, False),
    ],
)
def test_crash_hook(target, passed, killed):
    result = _run(target)
    assert result.stdout.count("passed") == passed
    if killed:
        assert result.returncode == -signal.SIGKILL
        assert "done" not in result.stdout
    else:
        assert result.returncode == 0, result.stderr
        assert "done" in result.stdout


def test_points_are_unique():
    assert len(POINTS) == len(set(POINTS))
