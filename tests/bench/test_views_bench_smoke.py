"""bench/views.py cannot rot: at a tiny size every view and both baselines are materialized on DuckDB and
PostgreSQL, with the row counts the data implies, and each baseline gives its view's columns, types and values (a
column added to the view and not to the baseline made the compiled/baseline ratio compare unequal work). Timings
are never asserted (the machine is shared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from bench.__main__ import parse_args
from bench.views import run_views_bench, table
from bench.views_baseline import BASELINE_VIEWS, baseline_sql
from warehouse.views import VIEW_NAMES


def test_every_view_and_the_baseline_on_both_backends(tmp_path: Path) -> None:
    result = run_views_bench(tmp_path, patients=3, repeat=1)
    assert result["patients"] == 3 and result["resources"] > 3
    for backend in ("duckdb", "postgres"):
        b = result[backend]
        assert set(b["views"]) == set(VIEW_NAMES)
        assert set(b["baseline"]) == set(BASELINE_VIEWS) == set(b["compiled_vs_baseline"])
        for view in BASELINE_VIEWS:  # the baseline reads the same rows as the compiled view
            assert b["baseline"][view]["rows"] == b["views"][view]["rows"] > 0
        assert b["views"]["patient"]["rows"] == 3
    rows = {backend: {n: v["rows"] for n, v in result[backend]["views"].items()} for backend in ("duckdb", "postgres")}
    assert rows["duckdb"] == rows["postgres"]  # the same rows per view on both backends
    assert "BASELINE observation" in table(result)
    # the baseline does the same work: every column of today's view, in its order, with the same values and types
    with duckdb.connect(str(tmp_path / "views.duckdb"), read_only=True) as con:
        for view in BASELINE_VIEWS:
            got = [_columns_and_rows(con, sql) for sql in (f"SELECT * FROM {view}", baseline_sql(view, "duckdb"))]
            assert got[1][0] == got[0][0], view
            assert got[1][1] == got[0][1], view


def _columns_and_rows(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[tuple[str, str]], list[Any]]:
    cur = con.execute(sql)
    return [(d[0], str(d[1])) for d in cur.description or ()], sorted(cur.fetchall(), key=repr)


def test_views_size_follows_patients_unless_given() -> None:
    assert parse_args(["--patients", "12"]).view_patients == 12
    assert parse_args(["--patients", "5000"]).view_patients == 1_000
    assert parse_args(["--only", "views", "--view-patients", "40"]).view_patients == 40
