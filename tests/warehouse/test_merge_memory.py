"""The DuckDB merge streams the landed JSON past a narrow stage: 50,000 resources (~36 MB of JSON) merge under a
64 MB memory limit. Left to its optimizer, DuckDB built the join's hash table on the Parquet side, holding the
chunk's JSON, and ran out of memory here (WarehouseMemoryError)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from sandbox.data.generator import Generator
from tests.warehouse.conftest import land, resource
from warehouse import LandedFile, LandingZone, WarehouseMemoryError, land_ndjson_file
from warehouse.duckdb_backend import DuckDBWarehouse

_ROWS = 50_000


def test_a_large_file_merges_under_a_64mb_memory_limit(zone: LandingZone, tmp_path: Path) -> None:
    rng = random.Random(7)  # text that does not compress away: the merge holds it uncompressed
    landed = land(zone, (resource(f"o{k}", note=rng.randbytes(300).hex()) for k in range(_ROWS)))
    meta = pq.ParquetFile(landed.path).metadata
    assert sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > 30_000_000
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="64MB")
    assert wh.upsert_many([landed])[0].inserted == _ROWS
    assert len(wh.live_ids("c1", "Observation")) == _ROWS
    assert wh.upsert(landed).unchanged == _ROWS


def _observation_files(zone: LandingZone, tmp_path: Path, *, patients: int, rows_per_file: int) -> list[LandedFile]:
    """The sandbox's own Observations (the shape of a real export), landed as Bulk files of ``rows_per_file``."""
    generator = Generator(seed=1, patients=patients)
    lines = [orjson.dumps(r) for i in range(patients) for r in generator.patient_resources(i, ["Observation"])]
    files = []
    for start in range(0, len(lines), rows_per_file):
        ndjson = tmp_path / f"Observation_{start}.ndjson"
        ndjson.write_bytes(b"\n".join(lines[start : start + rows_per_file]) + b"\n")
        source = f"https://ehr.example/bulk/{ndjson.name}"
        files.append(
            land_ndjson_file(
                zone, ndjson, connection_id="c" * 32, resource_type="Observation", run_id="r1", source=source
            )
        )
    return files


def test_a_group_that_runs_out_of_memory_is_merged_again_one_file_at_a_time(
    zone: LandingZone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DuckDB holds a transaction's new rows in memory until it commits, and a group of files that does not fit
    must not fail an export whose files fit one at a time: the group is rolled back and merged file by file.
    (Whether a given group fits depends on DuckDB's threads, so the test makes the last file too large for the
    limit even alone: the retry then merges the first file, fails on the last one loudly, and a replay with
    more memory completes with exact counts.)"""
    small = land(zone, [resource(f"s{k}") for k in range(50)], connection_id="c" * 32, run_id="r0")
    large = _observation_files(zone, tmp_path, patients=600, rows_per_file=100_000)[0]
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="16MB")
    with caplog.at_level(logging.WARNING, logger="warehouse.merge"), pytest.raises(WarehouseMemoryError, match="16MB"):
        wh.upsert_many([small, large])
    assert "merging 2 landed files in one transaction ran out of memory" in caplog.text
    assert len(wh.live_ids("c" * 32, "Observation")) == 50  # merged by the retry, alone
    wh.close()
    roomy = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="256MB")
    stats = roomy.upsert_many([small, large])  # the engine replays the files it never marked done
    assert [(s.inserted, s.unchanged) for s in stats] == [(0, 50), (large.rows, 0)]


def test_a_single_file_that_does_not_fit_fails_loudly_without_a_retry(
    zone: LandingZone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing smaller to retry: the memory error names the limit, and nothing is merged."""
    files = _observation_files(zone, tmp_path, patients=600, rows_per_file=100_000)
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="16MB")
    with caplog.at_level(logging.WARNING, logger="warehouse.merge"), pytest.raises(WarehouseMemoryError, match="16MB"):
        wh.upsert_many(files[:1])
    assert "one at a time" not in caplog.text
    assert wh.live_ids("c" * 32, "Observation") == set()
