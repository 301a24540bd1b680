"""``Warehouse.batch()``: a whole export's upserts on one held connection (DuckDB checkpoints its log into the
file at every close, which dominated bulk time), with the same results and the same cross-process exclusion."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import (
    LandedFile,
    LandingZone,
    UpsertStats,
    Warehouse,
    WarehouseMemoryError,
    duckdb_backend,
    open_warehouse,
)
from warehouse._duckdb_writer import Writing
from warehouse.duckdb_backend import DuckDBWarehouse


def _files(zone: LandingZone, n: int) -> list[LandedFile]:
    return [land(zone, [resource(f"o{i}-{k}") for k in range(20)], run_id=f"r{i}") for i in range(n)]


def test_batch_gives_the_same_rows_as_separate_writes(wh: Warehouse, zone: LandingZone, tmp_path: Path) -> None:
    files = _files(zone, 5)
    with wh.batch():
        stats = [wh.upsert(f) for f in files]
        assert len(wh.live_ids("c1", "Observation")) == 100  # reads inside the batch see its commits
    assert [s.inserted for s in stats] == [20] * 5
    with wh.batch():
        again = [wh.upsert(f) for f in files]
    assert all(s.unchanged == 20 and s.inserted == s.updated == 0 for s in again)


def test_duckdb_batch_opens_one_connection(tmp_path: Path, zone: LandingZone, monkeypatch: pytest.MonkeyPatch) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    opened: list[Path] = []
    real = duckdb_backend.write_attached

    def counting(path: Path, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[Writing]:
        opened.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(duckdb_backend, "write_attached", counting)
    files = _files(zone, 4)
    with wh.batch(), wh.batch():  # re-entrant
        for f in files:
            wh.upsert(f)
        deleted_at = files[0].max_last_updated
        assert deleted_at is not None
        wh.tombstone("c1", "Observation", ["o0-0"], deleted_at=deleted_at)
    assert opened == [wh.path]
    for f in files:
        wh.upsert(f)
    assert len(opened) == 1 + len(files)
    wh.close()


class _ToQueue(logging.Handler):
    def __init__(self, queue: mp.Queue) -> None:  # type: ignore[type-arg]
        super().__init__(logging.INFO)
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("waiting"):
            self.queue.put("waiting")


def _write_other(path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Another process writing the warehouse: says when it is blocked on the write lock (the warehouse's own
    lock-wait line, every 0.2 s), then when it wrote."""
    lock_log = logging.getLogger("warehouse")
    lock_log.setLevel(logging.INFO)
    lock_log.addHandler(_ToQueue(queue))
    other = DuckDBWarehouse(path, lock_timeout_s=120, lock_log_every_s=0.2)
    other.tombstone("c9", "Patient", ["x"], deleted_at=datetime.now(UTC))
    queue.put("wrote")
    other.close()


def test_duckdb_batch_keeps_other_processes_out_until_it_ends(tmp_path: Path, zone: LandingZone) -> None:
    """The other process is seen waiting for the lock while the batch holds it (not merely slow to start), and
    writes only once the batch has ended."""
    path = str(tmp_path / "wh.duckdb")
    wh = open_warehouse(path)
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    with wh.batch():
        wh.upsert(_files(zone, 1)[0])
        proc = ctx.Process(target=_write_other, args=(path, queue))
        proc.start()
        assert queue.get(timeout=120) == "waiting", "another process wrote while the batch held the warehouse"
    proc.join(120)
    assert proc.exitcode == 0
    seen = []
    while not queue.empty():
        seen.append(queue.get(timeout=5))
    assert seen and seen[-1] == "wrote" and set(seen) <= {"waiting", "wrote"}, seen  # it wrote after waiting
    wh.close()


def test_duckdb_out_of_memory_is_a_typed_error(tmp_path: Path, zone: LandingZone) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="2MB", threads=1)
    big = land(zone, [resource(f"b{k}", note=[{"text": "x" * 2000}]) for k in range(20_000)], run_id="big")
    with pytest.raises(WarehouseMemoryError, match="memory limit"):
        wh.upsert(big)
    wh.close()


def test_duckdb_chunked_upsert_matches_whole_file(tmp_path: Path, zone: LandingZone) -> None:
    """A file merged in chunks (bounded memory) ends exactly like one merged at once, duplicates included:
    a later copy of an id with the same or a newer lastUpdated wins, an older one is ignored (BDX-24)."""
    rows = [resource(f"o{k}", note=[{"text": f"v1-{k}"}]) for k in range(25)]
    rows.append(resource("o3", last_updated="2026-01-02T00:00:00Z", note=[{"text": "newer"}]))
    rows.append(resource("o4", last_updated="2025-12-31T00:00:00Z", note=[{"text": "older"}]))
    landed = land(LandingZone(tmp_path / "small-groups", batch_rows=3), rows)  # 9 row groups of 3 rows
    whole = DuckDBWarehouse(tmp_path / "whole.duckdb")
    chunked = DuckDBWarehouse(tmp_path / "chunked.duckdb", upsert_chunk_rows=7)
    assert chunked._row_ranges(pq.ParquetFile(landed.path).metadata) == [
        (0, 6),
        (6, 12),
        (12, 18),
        (18, 24),
        (24, 27),
    ]  # whole row groups
    a, b = whole.upsert(landed), chunked.upsert(landed)
    assert a == b == UpsertStats(inserted=25, updated=0, unchanged=0, duplicates=2)  # winners over the whole file
    assert _content(whole) == _content(chunked)
    before = chunked.row_fingerprint()
    assert chunked.upsert(landed) == UpsertStats(inserted=0, updated=0, unchanged=25, duplicates=2)
    assert chunked.row_fingerprint() == before  # a replay rewrites nothing, not even landed_at
    whole.close()
    chunked.close()


def test_duckdb_chunked_replay_of_same_time_copies_is_idempotent(tmp_path: Path) -> None:
    """Two copies of an id with the same lastUpdated but different versions, in different chunks: the later line
    wins once, and replaying the file changes nothing (the earlier copy must never be staged on its own)."""
    rows = [resource("x", version="1", note=[{"text": "first"}]), resource("y"), resource("x", version="2")]
    landed = land(LandingZone(tmp_path / "one-row-groups", batch_rows=1), rows)
    chunked = DuckDBWarehouse(tmp_path / "chunked.duckdb", upsert_chunk_rows=1)
    assert len(chunked._row_ranges(pq.ParquetFile(landed.path).metadata)) == 3
    assert chunked.upsert(landed) == UpsertStats(inserted=2, updated=0, unchanged=0, duplicates=1)
    before = chunked.row_fingerprint()
    assert chunked.upsert(landed) == UpsertStats(inserted=0, updated=0, unchanged=2, duplicates=1)
    assert chunked.row_fingerprint() == before
    assert [r[1] for r in _content(chunked)] == ["2", "1"]  # x at version 2, y at 1
    chunked.close()


def _content(wh: Warehouse) -> list[tuple[object, ...]]:
    return [
        (r["id"], r["version_id"], str(r["last_updated"]), r["resource"])
        for r in wh.iter_rows(
            "SELECT id, version_id, last_updated, CAST(resource AS VARCHAR) AS resource "
            "FROM fhir_resources ORDER BY id",
            (),
        )
    ]


def test_duckdb_upsert_chunks_are_bounded_by_bytes_too(tmp_path: Path) -> None:
    """Large resources make small chunks: the byte budget cuts between row groups before the row budget."""
    zone = LandingZone(tmp_path / "landing", batch_rows=2)
    landed = land(zone, [resource(f"d{k}", note=[{"text": "x" * 20_000}]) for k in range(6)])
    row_bounded = DuckDBWarehouse(tmp_path / "rows.duckdb", upsert_chunk_rows=1_000)
    byte_bounded = DuckDBWarehouse(tmp_path / "bytes.duckdb", upsert_chunk_rows=1_000, upsert_chunk_bytes=50_000)
    assert row_bounded._row_ranges(pq.ParquetFile(landed.path).metadata) == [None]
    assert byte_bounded._row_ranges(pq.ParquetFile(landed.path).metadata) == [(0, 2), (2, 4), (4, 6)]
    assert byte_bounded.upsert(landed).inserted == 6
    row_bounded.upsert(landed)
    assert _content(row_bounded) == _content(byte_bounded)
    row_bounded.close()
    byte_bounded.close()
