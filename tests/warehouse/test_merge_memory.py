"""The DuckDB merge streams the landed JSON: 50,000 resources (~36 MB of JSON) merge under a 64 MB memory limit, both
appended straight from the file (a first load) and past the narrow stage (a load that replaces a stored row). Left
to its optimizer, DuckDB built the join's hash table on the Parquet side, holding the chunk's JSON, and ran out of
memory here (WarehouseMemoryError)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone
from warehouse.duckdb_backend import DuckDBWarehouse

_ROWS = 50_000


@pytest.mark.parametrize("stored_first", [False, True], ids=["first-load", "joined-to-the-stage"])
def test_a_large_file_merges_under_a_64mb_memory_limit(zone: LandingZone, tmp_path: Path, stored_first: bool) -> None:
    rng = random.Random(7)  # text that does not compress away: the merge holds it uncompressed
    landed = land(zone, (resource(f"o{k}", note=rng.randbytes(300).hex()) for k in range(_ROWS)))
    meta = pq.ParquetFile(landed.path).metadata
    assert sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > 30_000_000
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="64MB")
    if stored_first:  # an older copy of one id: not every row is new, so the append joins the stage
        wh.upsert(land(zone, [resource("o0", "2025-01-01T00:00:00Z")], run_id="r0"))
    stats = wh.upsert(landed)
    assert (stats.inserted, stats.updated) == ((_ROWS - 1, 1) if stored_first else (_ROWS, 0))
    assert len(wh.live_ids("c1", "Observation")) == _ROWS
    assert wh.upsert(landed).unchanged == _ROWS
