"""DuckDB admits one read-write process per file: ehrsync's writers queue on ``<db>.lock`` and retry DuckDB's own
lock, so several Dagster run processes can upsert different partitions of one file at the same time."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.warehouse.conftest import land, resource
from warehouse import (
    LandingZone,
    WarehouseLockTimeoutError,
    WarehouseTargetError,
    open_warehouse,
)
from warehouse._filelock import file_lock

FILES_PER_WORKER = 4
ROWS_PER_FILE = 300


def _worker(db: str, landing: str, connection_id: str) -> tuple[int, int]:
    zone = LandingZone(landing)
    inserted = updated = 0
    with open_warehouse(db, lock_timeout_s=60) as wh:
        for f in range(FILES_PER_WORKER):
            # Each file re-sends the previous file's ids with a newer lastUpdated, plus new ones.
            ids = range(f * ROWS_PER_FILE // 2, f * ROWS_PER_FILE // 2 + ROWS_PER_FILE)
            lu = f"2026-01-0{f + 1}T00:00:00Z"
            stats = wh.upsert(
                land(zone, [resource(f"o{i}", lu, str(f)) for i in ids], run_id=f"r{f}", connection_id=connection_id)
            )
            inserted += stats.inserted
            updated += stats.updated
            wh.live_ids(connection_id, "Observation")
        wh.tombstone(connection_id, "Observation", ["o0", "o1"], datetime(2026, 2, 1, tzinfo=UTC))
    return inserted, updated


@pytest.mark.slow
def test_three_processes_upsert_one_duckdb_file(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.duckdb")
    open_warehouse(db).close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(_worker, [(db, str(tmp_path / "landing"), f"conn{n}") for n in range(3)])
    distinct = FILES_PER_WORKER * ROWS_PER_FILE // 2 + ROWS_PER_FILE // 2
    for inserted, updated in results:
        assert inserted == distinct
        assert updated == (FILES_PER_WORKER - 1) * ROWS_PER_FILE // 2
    with open_warehouse(db, read_only=True) as wh:
        assert wh.summary() == [
            {"connection_id": f"conn{n}", "resource_type": "Observation", "live": distinct - 2, "deleted": 2}
            for n in range(3)
        ]


def test_writer_times_out_with_typed_error_when_lock_is_held(tmp_path: Path, zone: LandingZone) -> None:
    db = tmp_path / "w.duckdb"
    wh = open_warehouse(db, lock_timeout_s=0.3)
    landed = land(zone, [resource("a")])
    with file_lock(Path(f"{db}.lock"), exclusive=True, timeout_s=1):
        started = time.monotonic()
        with pytest.raises(WarehouseLockTimeoutError):
            wh.upsert(landed)
        assert time.monotonic() - started < 5
    assert wh.upsert(landed).inserted == 1


def test_write_waits_for_a_foreign_duckdb_process(tmp_path: Path, zone: LandingZone) -> None:
    """A process outside ehrsync holding DuckDB's own write lock is retried, not a failure."""
    db = tmp_path / "w.duckdb"
    wh = open_warehouse(db, lock_timeout_s=30)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(1.5); "
         "c.close()", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert wh.upsert(land(zone, [resource("a")])).inserted == 1
        assert time.monotonic() - started > 0.5
    finally:
        holder.wait(timeout=30)


def test_read_only_warehouse_reads_but_refuses_writes(tmp_path: Path, zone: LandingZone) -> None:
    db = tmp_path / "w.duckdb"
    with pytest.raises(WarehouseTargetError, match="does not exist"):
        open_warehouse(db, read_only=True)
    with open_warehouse(db) as wh:
        wh.upsert(land(zone, [resource("a")]))
    with open_warehouse(f"duckdb:///{db}", read_only=True) as ro:
        assert ro.live_ids("c1", "Observation") == {"a"}
        with pytest.raises(WarehouseTargetError, match="read-only"):
            ro.upsert(land(zone, [resource("b")]))
