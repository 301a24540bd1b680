"""The analyst snapshot (DuckDB): a read-only copy of the views published by generation with an atomic swap, so an
analyst's open session neither blocks a sync nor breaks when a new snapshot replaces it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import VIEW_NAMES, LandingZone
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.errors import InvalidInputError
from warehouse.snapshot import analyst_root, generations, publish_snapshot
from warehouse.view_refresh import refresh_analyst_views

# The analyst: opens the published snapshot read-only, answers a query, then answers again on each line it reads,
# keeping the same connection open all along (a notebook left open).
_ANALYST = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
def answer():
    print(con.execute("SELECT count(*) FROM observation").fetchone()[0], flush=True)
answer()
for line in sys.stdin:
    answer()
"""


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    wh = DuckDBWarehouse(tmp_path / "state" / "warehouse.duckdb", lock_timeout_s=30)
    yield wh
    wh.close()


def _observations(zone: LandingZone, wh: DuckDBWarehouse, ids: list[str]) -> None:
    obs = [resource(i, subject={"reference": "Patient/p1"}, status="final") for i in ids]
    wh.upsert(land(zone, obs, run_id=f"run-{ids[0]}"))


def test_publish_writes_a_generation_of_tables_and_parquet(duck: DuckDBWarehouse, zone: LandingZone) -> None:
    _observations(zone, duck, ["o1", "o2"])
    refresh_analyst_views(duck)
    snap = publish_snapshot(duck, VIEW_NAMES)
    root = analyst_root(duck.path)
    assert snap.generation.parent == root / "generations"
    assert snap.current == root / "current" and snap.current.is_symlink()
    assert snap.current.resolve() == snap.generation.resolve()
    assert [t.name for t in snap.tables] == list(VIEW_NAMES)
    with duckdb.connect(str(root / "current" / "analyst.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == set(VIEW_NAMES)
        assert con.execute("SELECT id FROM observation ORDER BY id").fetchall() == [("o1",), ("o2",)]
    observation = next(t for t in snap.tables if t.name == "observation")
    assert observation.rows == 2 and ("patient_id", "VARCHAR") in observation.columns
    assert observation.parquet is not None
    assert sorted(pq.read_table(observation.parquet).column("id").to_pylist()) == ["o1", "o2"]
    for table in snap.tables:
        assert table.parquet == snap.generation / f"{table.name}.parquet" and table.parquet.is_file()


def test_only_the_newest_generations_are_kept(duck: DuckDBWarehouse) -> None:
    refresh_analyst_views(duck)
    root = analyst_root(duck.path)
    published = [publish_snapshot(duck, ["patient"], keep=2).generation for _ in range(4)]
    assert generations(root) == published[-2:]
    assert (root / "current").resolve() == published[-1].resolve()
    # a half-built generation of a crashed publisher is cleared by the next publish
    (root / "generations" / ".building-crashed").mkdir()
    newest = publish_snapshot(duck, ["patient"], keep=2).generation
    assert not (root / "generations" / ".building-crashed").exists()
    assert generations(root) == [published[-1], newest]


def test_bad_arguments_are_refused(duck: DuckDBWarehouse) -> None:
    with pytest.raises(InvalidInputError, match="identifiers"):
        publish_snapshot(duck, ['patient"; DROP TABLE fhir_resources; --'])
    with pytest.raises(InvalidInputError, match="at least 1"):
        publish_snapshot(duck, ["patient"], keep=0)


def test_an_open_analyst_session_neither_blocks_a_sync_nor_breaks(duck: DuckDBWarehouse, zone: LandingZone) -> None:
    """The analyst (a separate process) keeps the snapshot open read-only while a sync writes the warehouse and a
    new snapshot replaces (and, with keep=1, deletes) the one it has open: the sync and the publish finish, the
    analyst's session keeps answering from its snapshot, and a fresh open sees the new data."""
    _observations(zone, duck, ["o1"])
    refresh_analyst_views(duck)
    first = publish_snapshot(duck, VIEW_NAMES, keep=1)
    current = analyst_root(duck.path) / "current" / "analyst.duckdb"
    analyst = subprocess.Popen(
        [sys.executable, "-c", _ANALYST, str(current)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert analyst.stdout is not None and analyst.stdin is not None
        assert analyst.stdout.readline().strip() == "1"  # the analyst holds the file open from here on
        _observations(zone, duck, ["o2", "o3"])  # the sync's writer opens the warehouse read-write
        refresh_analyst_views(duck)
        second = publish_snapshot(duck, VIEW_NAMES, keep=1)
        assert not first.generation.exists()  # pruned while the analyst still has its file open
        analyst.stdin.write("again\n")
        analyst.stdin.flush()
        assert analyst.stdout.readline().strip() == "1"  # same session, same snapshot, still answering
        with duckdb.connect(str(current), read_only=True) as fresh:
            assert fresh.execute("SELECT count(*) FROM observation").fetchone() == (3,)
        assert current.resolve().parent == second.generation.resolve()
    finally:
        if analyst.stdin is not None:
            analyst.stdin.close()
        assert analyst.wait(60) == 0
