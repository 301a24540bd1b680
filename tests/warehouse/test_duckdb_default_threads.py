"""Without an explicit thread count a DuckDB warehouse uses the cores the process may run on: its CPU affinity
(a container's cpuset, ``taskset``), not the machine's count, which DuckDB's own default would take."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from warehouse._duckdb_io import DuckCursor
from warehouse.duckdb_backend import DuckDBWarehouse

PROBE = """
import os, sys
from warehouse.duckdb_backend import DuckDBWarehouse
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
wh = DuckDBWarehouse(sys.argv[1])
try:
    with wh._write("probe") as cur:
        print(cur.conn.execute("SELECT current_setting('threads')").fetchone()[0])
finally:
    wh.close()
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux interface")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="on one core, affinity and the machine's count are the same")
def test_default_threads_follow_the_process_cpu_affinity(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "wh.duckdb")], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"


def test_explicit_threads_win(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", threads=3)
    try:
        with wh._write("probe") as cur:
            assert isinstance(cur, DuckCursor)
            row = cur.conn.execute("SELECT current_setting('threads')").fetchone()
    finally:
        wh.close()
    assert row == (3,)
