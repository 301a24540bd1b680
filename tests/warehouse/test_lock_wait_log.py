"""Waiting for the DuckDB write lock says so (issue 10): a line at least every ``lock_log_every_s`` (10 s by
default) naming who holds it (pid, host, since, run id when given), written into the lock file by the holder."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, WarehouseLockTimeoutError
from warehouse._filelock import LOCK_LOG_EVERY_S, file_lock
from warehouse.duckdb_backend import DuckDBWarehouse

_HOLD_EHRSYNC_LOCK = """
    import sys, time
    from warehouse import lock_owner
    from warehouse.duckdb_backend import DuckDBWarehouse
    wh = DuckDBWarehouse(sys.argv[1])
    with lock_owner("run run-holder"), wh.batch():
        print("held", flush=True)
        time.sleep(120)
"""
_HOLD_DUCKDB_ITSELF = """
    import sys, time, duckdb
    conn = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(script: str, db: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(db)], stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def _waits(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and needle in r.getMessage()]


def test_a_waiting_writer_logs_who_holds_the_write_lock(
    tmp_path: Path, zone: LandingZone, hold, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "w.duckdb"
    # 5 s, not 1.2: a busy CI machine may oversleep each 0.25 s pause, and 1.2 s then holds only two lines
    waiter = DuckDBWarehouse(db, lock_timeout_s=5.0, lock_log_every_s=0.25)
    holder = hold(_HOLD_EHRSYNC_LOCK, db)
    caplog.set_level(logging.INFO, logger="warehouse")
    with pytest.raises(WarehouseLockTimeoutError, match=f"held by run run-holder, pid {holder.pid} ") as caught:
        waiter.upsert(land(zone, [resource("a")]))
    lines = _waits(caplog, "for the write lock w.duckdb.lock")
    assert len(lines) >= 3, lines  # one every 0.25 s over 5 s
    assert all(f"held by run run-holder, pid {holder.pid} on " in line for line in lines)
    assert "since" in str(caught.value)
    assert LOCK_LOG_EVERY_S == 10.0  # the documented default interval


def test_a_waiting_writer_logs_a_foreign_duckdb_holder(
    tmp_path: Path, zone: LandingZone, hold, caplog: pytest.LogCaptureFixture
) -> None:
    """A process outside ehrsync (an analyst's session) holds DuckDB's own lock: the wait is logged as well. 8 s,
    not 1.2: each refused open of the file took about a second on a busy machine, which then logged once."""
    db = tmp_path / "w.duckdb"
    DuckDBWarehouse(db).close()
    hold(_HOLD_DUCKDB_ITSELF, db)
    caplog.set_level(logging.INFO, logger="warehouse")
    with pytest.raises(WarehouseLockTimeoutError):
        DuckDBWarehouse(db, lock_timeout_s=8.0, lock_log_every_s=0.25)
    lines = _waits(caplog, "another process outside ehrsync holds it")
    assert len(lines) >= 3, lines


def test_the_lock_file_is_cleared_when_the_writer_lets_go(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    wh = DuckDBWarehouse(db, owner="run r1")
    lock = tmp_path / "w.duckdb.lock"
    with wh.batch():
        assert b'"owner": "run r1"' in lock.read_bytes()
    assert lock.read_bytes() == b""


_HOLD_EXCLUSIVE = """
    import sys, time
    from pathlib import Path
    from warehouse._filelock import file_lock
    with file_lock(Path(sys.argv[1]), exclusive=True, timeout_s=5, owner="run run-killed"):
        print("held", flush=True)
        time.sleep(120)
"""


def test_a_killed_writer_is_not_blamed_for_readers_holding_the_lock(tmp_path: Path) -> None:
    """A writer SIGKILLed while holding the lock leaves its JSON in the file; a later writer blocked by readers
    says readers hold it (the dead pid exited), not "held by run run-killed"."""
    lock = tmp_path / "w.duckdb.lock"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLD_EXCLUSIVE), str(lock)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    proc.kill()
    proc.wait(timeout=10)
    assert b"run-killed" in lock.read_bytes()  # the killed holder could not clear it
    with (
        file_lock(lock, exclusive=False, timeout_s=1),
        pytest.raises(WarehouseLockTimeoutError) as caught,
        file_lock(lock, exclusive=True, timeout_s=0.3),
    ):
        pass
    message = str(caught.value)
    assert f"readers (previous holder pid {proc.pid} exited)" in message, message
    assert "run-killed" not in message
