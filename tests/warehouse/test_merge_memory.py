"""The DuckDB merge streams the landed JSON: 50,000 resources (~36 MB of JSON) merge under a 64 MB memory limit, both
appended straight from the file (a first load) and joined to the narrow ``_changes`` (a load that replaces a stored
row). Left
to its optimizer, DuckDB built the join's hash table on the Parquet side, holding the chunk's JSON, and ran out of
memory here (WarehouseMemoryError)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, WarehouseMemoryError
from warehouse.duckdb_backend import DuckDBWarehouse

_ROWS = 50_000


@pytest.mark.parametrize("stored_first", [False, True], ids=["first-load", "joined-to-changes"])
def test_a_large_file_merges_under_a_64mb_memory_limit(zone: LandingZone, tmp_path: Path, stored_first: bool) -> None:
    rng = random.Random(7)  # text that does not compress away: the merge holds it uncompressed
    landed = land(zone, (resource(f"o{k}", note=rng.randbytes(300).hex()) for k in range(_ROWS)))
    meta = pq.ParquetFile(landed.path).metadata
    assert sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > 30_000_000
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="64MB")
    if stored_first:  # an older copy of one id: not every row is new, so the append joins ``_changes``
        wh.upsert(land(zone, [resource("o0", "2025-01-01T00:00:00Z")], run_id="r0"))
    stats = wh.upsert(landed)
    assert (stats.inserted, stats.updated) == ((_ROWS - 1, 1) if stored_first else (_ROWS, 0))
    assert len(wh.live_ids("c1", "Observation")) == _ROWS
    assert wh.upsert(landed).unchanged == _ROWS


@pytest.mark.parametrize("resource_bytes", [8_000, 40_000, 100_000])
@pytest.mark.parametrize("stored_first", [False, True], ids=["first-load", "joined-to-changes"])
def test_60mb_of_medium_resources_merge_under_the_default_limit(
    zone: LandingZone, tmp_path: Path, resource_bytes: int, stored_first: bool
) -> None:
    """Documents with inline attachments of 8-100 KB each: 60 MB of them in one landed file merge under the default
    128 MB limit. With 16 MiB landing row groups DuckDB read 16 MiB column chunks and ran out of memory, and so did
    one append joined to the rows it writes over all of them (now a statement per 8 MiB slice)."""
    rows = 60_000_000 // resource_bytes
    rng = random.Random(resource_bytes)
    landed = land(zone, (resource(f"d{k}", note=rng.randbytes(resource_bytes // 2).hex()) for k in range(rows)))
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    if stored_first:
        wh.upsert(land(zone, [resource("d0", "2025-01-01T00:00:00Z")], run_id="r0"))
    stats = wh.upsert(landed)
    assert (stats.inserted, stats.updated) == ((rows - 1, 1) if stored_first else (rows, 0))
    assert len(wh.live_ids("c1", "Observation")) == rows


def test_running_out_of_memory_at_the_commit_is_a_warehouse_memory_error(zone: LandingZone, tmp_path: Path) -> None:
    """DuckDB's commit writes the rows out and can fail for memory itself ("Failed to commit: failed to pin
    block"): that is the typed ``WarehouseMemoryError`` naming the limit (what the Bulk merge group retries one file
    at a time), nothing of the transaction is stored, and the warehouse stays usable."""
    rng = random.Random(100)
    landed = land(zone, (resource(f"d{k}", note=rng.randbytes(50_000).hex()) for k in range(600)))
    # one DuckDB thread, as a sync step on two cores: with more threads the append itself runs out first
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="64MB", threads=1)
    wh.upsert(land(zone, [resource("d0", "2025-01-01T00:00:00Z")], run_id="r0"))
    with pytest.raises(WarehouseMemoryError, match=r"64MB\) in the commit of c1/Observation"):
        wh.upsert(landed)
    assert wh.live_ids("c1", "Observation") == {"d0"}
    assert wh.upsert(land(zone, [resource("after")], run_id="r2")).inserted == 1
