"""The one flock poll loop (connectors/filelock.py): shared locks coexist, an exclusive one waits, reports who
holds it while waiting, and answers False at its timeout so each caller raises its own error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.filelock import LockWait, holder_stamp, read_holder, release_flock, take_flock, write_holder


@pytest.fixture
def two_fds(tmp_path: Path) -> Iterator[tuple[int, int]]:
    path = tmp_path / "x.lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # a second open file description: flock sees two holders
    yield first, second
    os.close(first)
    os.close(second)


def test_shared_locks_coexist_and_an_exclusive_one_times_out(two_fds: tuple[int, int]) -> None:
    first, second = two_fds
    assert take_flock(first, exclusive=False, wait=LockWait(1.0))
    assert take_flock(second, exclusive=False, wait=LockWait(1.0))
    release_flock(second)
    busy: list[float] = []
    assert not take_flock(second, exclusive=True, wait=LockWait(0.2, 0.01, 0.05), on_busy=busy.append)
    assert len(busy) == 1 and busy[0] < 0.2  # reported at once (report_after_s=0), then never again
    release_flock(first)
    assert take_flock(second, exclusive=True, wait=LockWait(0.2))


def test_periodic_reports_while_waiting(two_fds: tuple[int, int]) -> None:
    first, second = two_fds
    assert take_flock(first, exclusive=True, wait=LockWait(1.0))
    busy: list[float] = []
    wait = LockWait(0.6, 0.005, 0.02, jitter=True, report_after_s=0.1, report_every_s=0.1)
    assert not take_flock(second, exclusive=True, wait=wait, on_busy=busy.append)
    assert 2 <= len(busy) <= 6 and all(waited >= 0.1 for waited in busy)


def test_holder_note_is_written_read_and_cleared(two_fds: tuple[int, int]) -> None:
    first, second = two_fds
    assert take_flock(first, exclusive=True, wait=LockWait(1.0))
    write_holder(first, {"run_id": "r1", **holder_stamp()})
    note = read_holder(second)
    assert note is not None and note["run_id"] == "r1" and note["pid"] == os.getpid()
    release_flock(first, clear=True)
    assert read_holder(second) is None
