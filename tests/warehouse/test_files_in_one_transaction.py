"""Several landed files merged in one ``Warehouse.transaction()`` (what a Bulk merge group does; on DuckDB a commit
per small file cost half the merge) have exactly the outcomes of separate upserts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandedFile, LandingZone, UpsertStats, Warehouse
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.errors import LandedFileError


def _files(zone: LandingZone) -> list[LandedFile]:
    first = land(zone, [resource(f"o{k}", "2026-01-01T00:00:00Z") for k in range(30)], run_id="r1")
    # the second file updates ten of them, repeats ten unchanged, adds ten, and holds one id twice (newest wins)
    second = land(
        zone,
        [resource(f"o{k}", "2026-02-01T00:00:00Z", value=k + 1) for k in range(10)]
        + [resource(f"o{k}", "2026-01-01T00:00:00Z") for k in range(10, 20)]
        + [resource(f"n{k}", "2026-02-01T00:00:00Z") for k in range(10)]
        + [resource("n0", "2026-03-01T00:00:00Z")],
        run_id="r2",
    )
    patients = land(zone, [resource(f"p{k}", resource_type="Patient") for k in range(5)], resource_type="Patient")
    return [first, second, patients]


def _in_one_transaction(wh: Warehouse, files: list[LandedFile]) -> list[UpsertStats]:
    with wh.batch(), wh.transaction():
        return [wh.upsert(landed) for landed in files]


def test_files_in_one_transaction_count_like_separate_upserts(wh: Warehouse, zone: LandingZone, tmp_path: Path) -> None:
    files = _files(zone)
    stats = _in_one_transaction(wh, files)
    assert [(s.inserted, s.updated, s.unchanged, s.duplicates) for s in stats] == [
        (30, 0, 0, 0),
        (10, 10, 10, 1),
        (5, 0, 0, 0),
    ]
    assert len(wh.live_ids("c1", "Observation")) == 40
    assert _in_one_transaction(wh, files)[1].unchanged == 30  # a replay of the group changes nothing


def test_a_failing_file_leaves_none_of_its_group_merged_on_duckdb(zone: LandingZone, tmp_path: Path) -> None:
    """The group is one transaction: the good file before the bad one is rolled back too, and replaying the
    good files alone afterwards merges them (the engine keeps them ``landed`` until the group commits)."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    good = _files(zone)[0]
    other = land(zone, [resource("x1")], connection_id="c2", run_id="r9")
    mislabelled = dataclasses.replace(other, connection_id="c1")  # rows of c2 presented as c1's
    with pytest.raises(LandedFileError, match="another connection"):
        _in_one_transaction(wh, [good, mislabelled])
    assert wh.live_ids("c1", "Observation") == set()
    assert [s.inserted for s in _in_one_transaction(wh, [good])] == [30]


def test_nested_transactions_join_the_outer_one(zone: LandingZone, tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    first, second, _ = _files(zone)
    with wh.batch(), pytest.raises(RuntimeError), wh.transaction():
        wh.upsert(first)
        with wh.transaction():
            wh.upsert(second)
        raise RuntimeError("the caller fails after both merges")
    assert wh.live_ids("c1", "Observation") == set()
