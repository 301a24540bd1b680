"""A Bulk merge group keeps one DuckDB transaction open over many landed files (``engine.bulk_merge_group``), and
DuckDB frees a temporary table replaced inside a transaction only at the commit. So what a file's merge stages
must stay small: a stage of every row's columns (~15 MB per 50,000 resources) piled up to ~100 MB per group and
filled the memory limit (docs/PERFORMANCE.md, issue 14). Now only ``_changes`` (file row numbers, and the ids
they replace) is staged, and the rows themselves are read from the Parquet file by each statement."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone
from warehouse._duckdb_io import DuckCursor
from warehouse.duckdb_backend import DuckDBWarehouse

_FILES = 10
_ROWS = 20_000
_MIB = 1024 * 1024


def _in_memory_tables(wh: DuckDBWarehouse) -> int:
    """Bytes DuckDB holds for tables in memory: the transaction's appended rows and the temporary tables."""
    conn = wh._held
    assert conn is not None  # inside wh.batch()
    row = conn.execute("SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'IN_MEMORY_TABLE'").fetchone()
    return int(row[0]) if row else 0


def test_files_merged_in_one_transaction_do_not_pile_up_staged_rows(zone: LandingZone, tmp_path: Path) -> None:
    rng = random.Random(3)
    files = [
        land(zone, (resource(f"f{n}-{k}", note=rng.randbytes(40).hex()) for k in range(_ROWS)), run_id=f"r{n}")
        for n in range(_FILES)
    ]
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", threads=1)  # the default limit, 128 MB
    held = []
    with wh.batch(), wh.transaction():
        for landed in files:
            assert wh.upsert(landed).inserted == _ROWS
            held.append(_in_memory_tables(wh))
    # DuckDB holds appended rows until it writes a row group out, so what is held moves by tens of MB (7-27 MB
    # here); a stage of every row's columns kept until the commit climbed with each file (14 to 66 MB).
    assert max(held) < 40 * _MIB, [h // _MIB for h in held]
    assert len(wh.live_ids("c1", "Observation")) == _FILES * _ROWS


def test_a_replaying_merge_in_one_transaction_stays_small_and_exact(zone: LandingZone, tmp_path: Path) -> None:
    """The same files merged again inside one transaction: nothing new, nothing staged to write."""
    files = [land(zone, (resource(f"f{n}-{k}") for k in range(_ROWS)), run_id=f"r{n}") for n in range(3)]
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="2GB", threads=1)
    for landed in files:
        wh.upsert(landed)
    with wh.batch(), wh.transaction():
        stats = [wh.upsert(landed) for landed in files]
    assert [(s.inserted, s.updated, s.unchanged) for s in stats] == [(0, 0, _ROWS)] * 3


def _limit(wh: DuckDBWarehouse) -> str:
    assert wh._held is not None
    row = wh._held.execute("SELECT current_setting('memory_limit')").fetchone()
    assert row is not None
    return str(row[0])


def test_lean_memory_halves_the_limit_for_the_writes_inside_then_restores_it(
    zone: LandingZone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A large resource merged inside raises the limit from the lean one and gives the lean one back; a limit at
    the floor is not lowered."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="200MiB", threads=1)
    large = land(zone, [resource("big", note="x" * 4_500_000)], run_id="big")  # isolated in its own row group
    with wh.batch():
        configured = _limit(wh)
        with wh.lean_memory() as lowered:
            assert lowered and _limit(wh) == "100.0 MiB"
            with caplog.at_level(logging.INFO, logger="warehouse.duckdb_backend"):
                assert wh.upsert(large).inserted == 1
            assert "with memory_limit 140 MiB" in caplog.text  # the lean 100 MiB + 8 x 5 MiB, not 200 + 40
            assert _limit(wh) == "100.0 MiB"
        assert _limit(wh) == configured == "200.0 MiB"
    floor = DuckDBWarehouse(tmp_path / "floor.duckdb", memory_limit="16MiB")
    with floor.batch(), floor.lean_memory() as lowered:
        assert not lowered and _limit(floor) == "16.0 MiB"


def test_a_failed_merge_leaves_no_setting_behind_on_the_held_connection(
    zone: LandingZone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement that fails while the merge has the join optimizer off and the limit raised for a large resource:
    DuckDB refuses the restores until the rollback, so the rollback restores both. The connection is held for the
    next file of the export, or a merge group's retry, which must not run with them."""
    from warehouse import _duck_merge, duckdb_backend

    def failing(cur: DuckCursor, *args: object, **kw: object) -> tuple[int, int, int]:
        with _duck_merge._build_on_the_right(cur):
            cur.execute("SELECT error('disk went away')")
        raise AssertionError("unreachable")

    large = land(zone, [resource("big", note="x" * 4_500_000)], run_id="big")
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="100MiB", threads=1)
    monkeypatch.setattr(duckdb_backend, "merge_chunk", failing)
    with wh.batch():
        with pytest.raises(duckdb.Error, match="disk went away"):
            wh.upsert(large)
        assert _limit(wh) == "100.0 MiB"
        assert wh._held is not None
        row = wh._held.execute("SELECT current_setting('disabled_optimizers')").fetchone()
        assert row is not None and "build_side_probe_side" not in str(row[0]).lower()


def _build_side(conn: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> str:
    """The operator names under the (first) hash join's build side, its right child, in DuckDB's plan of ``sql``."""
    plan = json.loads(conn.execute(f"EXPLAIN (FORMAT json) {sql}", params).fetchall()[0][1])

    def find(node: dict[str, Any]) -> dict[str, Any] | None:
        if node["name"] == "HASH_JOIN":
            return node
        return next((hit for child in node["children"] if (hit := find(child)) is not None), None)

    def names(node: dict[str, Any]) -> str:
        return " ".join([node["name"], *(names(child) for child in node["children"])])

    join = next(hit for root in plan if (hit := find(root)) is not None)
    return names(join["children"][1])


def test_the_classification_join_builds_on_the_file_even_when_duckdb_would_not(
    zone: LandingZone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored rows of a type grow with the warehouse, the file's are bounded by a chunk: ``_changes`` is
    planned with its hash table on the file's keys. Here (fewer stored rows than the file's) DuckDB's optimizer
    would build on the stored side, so a DuckDB that ignored the disabled optimizer would fail this test."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", threads=1)
    wh.upsert(land(zone, [resource(f"s{k}") for k in range(50)], run_id="stored"))
    statements: list[tuple[str, list[object]]] = []
    real = DuckCursor.execute

    def spy(cur: DuckCursor, sql: str, params: Sequence[Any] = ()) -> None:
        if sql.startswith("CREATE OR REPLACE TEMP TABLE _changes AS "):
            select = sql.removeprefix("CREATE OR REPLACE TEMP TABLE _changes AS ").replace("%s", "?")
            statements.append((select, list(params)))
        real(cur, sql, params)

    monkeypatch.setattr(DuckCursor, "execute", spy)
    wh.upsert(land(zone, [resource(f"n{k}") for k in range(5_000)], run_id="new"))
    assert len(statements) == 1
    select, params = statements[0]
    with wh.batch():
        conn = wh._held
        assert conn is not None
        assert "SEQ_SCAN" in _build_side(conn, select, params), "DuckDB alone builds on the stored rows here"
        conn.execute("SET disabled_optimizers = 'build_side_probe_side'")  # as the merge runs it
        build = _build_side(conn, select, params)
        conn.execute("RESET disabled_optimizers")
    assert "READ_PARQUET" in build and "SEQ_SCAN" not in build, build
