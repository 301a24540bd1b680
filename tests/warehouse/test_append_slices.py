"""``_duckdb_io.append_slices``: the statements of an append joined to the stage cover a chunk's rows exactly once,
in order, in whole row groups, each within the byte bound (a group above the bound alone)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse._duckdb_io import append_slices


def _meta(tmp_path: Path, groups: list[tuple[int, int]]) -> pq.FileMetaData:
    """A Parquet file with one row group per (rows, bytes per row) of incompressible text."""
    path = tmp_path / "f.parquet"
    with pq.ParquetWriter(path, pa.schema([("t", pa.string())]), compression="none", use_dictionary=False) as w:
        for n, size in groups:
            w.write_table(pa.table({"t": [f"{k:0{size}d}" for k in range(n)]}))
    return pq.ParquetFile(path).metadata


def _groups(meta: pq.FileMetaData) -> list[tuple[int, int, int]]:
    """(first row, stop row, uncompressed bytes) of each row group."""
    out, offset = [], 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        out.append((offset, offset + group.num_rows, group.total_byte_size))
        offset += group.num_rows
    return out


@pytest.mark.parametrize("rows", [None, (3, 47), (0, 1), (10, 30), (15, 35)])
def test_slices_cover_the_rows_once_in_whole_groups_within_the_bound(
    tmp_path: Path, rows: tuple[int, int] | None
) -> None:
    meta = _meta(tmp_path, [(10, 100), (5, 2_000), (20, 10), (15, 500)])
    groups = _groups(meta)
    slices = append_slices(meta, rows, 4_000)
    first, last = rows or (0, meta.num_rows)
    assert slices[0][0] == first and slices[-1][1] == last
    assert all(a < b for a, b in slices) and all(p[1] == q[0] for p, q in itertools.pairwise(slices))
    starts = {a for a, _, _ in groups}
    assert all(a in starts for a, _ in slices[1:]), "every cut is at a row group's first row"
    for a, b in slices:
        inside = [size for g0, g1, size in groups if g0 < b and g1 > a]
        assert len(inside) == 1 or sum(inside) <= 4_000


def test_a_row_over_the_bound_is_a_slice_of_its_own(tmp_path: Path) -> None:
    meta = _meta(tmp_path, [(3, 100), (1, 50_000), (3, 100)])
    slices = append_slices(meta, None, 10_000)
    assert (3, 4) in slices and slices[0] == (0, 3) and slices[-1] == (4, 7)


def test_a_chunk_under_the_bound_is_one_statement(tmp_path: Path) -> None:
    meta = _meta(tmp_path, [(10, 100), (10, 100)])
    assert append_slices(meta, None, 1 << 20) == [(0, 20)]
