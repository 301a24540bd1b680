"""A DuckDB writer appends row groups of ``WRITER_ROW_GROUP_ROWS`` (issue 14): DuckDB holds a transaction's rows
uncompressed up to a row group, so smaller ones bound the merge's memory. The option exists only when attaching, so
the file is attached to an in-memory database under a fixed catalog name (whatever the file is called) with the
temporary directory a plain connection would use; readers open the file as before, and the data is on disk once
the writer closes."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone
from warehouse._duckdb_io import WRITER_CATALOG, WRITER_ROW_GROUP_ROWS, DuckCursor
from warehouse.duckdb_backend import DuckDBWarehouse


def _setting(wh: DuckDBWarehouse, sql: str) -> object:
    with wh._write("probe") as cur:  # the writer's own connection
        assert isinstance(cur, DuckCursor)
        row = cur.conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_a_writer_appends_row_groups_of_the_writer_size(tmp_path: Path) -> None:
    zone = LandingZone(tmp_path / "zone")
    rows = WRITER_ROW_GROUP_ROWS + 5_000
    landed = land(zone, [resource(f"o{i}") for i in range(rows)], run_id="r1")
    path = tmp_path / "it's-a warehouse.duckdb"  # quotes and a dash in the name
    wh = DuckDBWarehouse(path)
    try:
        assert wh.upsert(landed).inserted == rows
        assert _setting(wh, "SELECT current_database()") == WRITER_CATALOG
        assert _setting(wh, "SELECT current_setting('temp_directory')") == f"{path}.tmp"
    finally:
        wh.close()
    with duckdb.connect(str(path), read_only=True) as reader:  # what an analyst opens: the plain file
        sizes = reader.execute(
            "SELECT row_group_id, max(count) FROM pragma_storage_info('fhir_resources') GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert reader.execute("SELECT count(*) FROM fhir_resources").fetchone() == (rows,)
    assert [n for _, n in sizes] == [WRITER_ROW_GROUP_ROWS, rows - WRITER_ROW_GROUP_ROWS]
    assert not Path(f"{path}.wal").exists(), "closing the writer checkpointed the attached file"


@pytest.mark.parametrize("name", ["memory", "main", "temp", "system", "analyst_snapshot", "a.b"])
def test_a_writer_opens_a_file_of_any_name(tmp_path: Path, name: str) -> None:
    """``memory`` is the in-memory database's own name and ``main``/``temp``/``system`` are reserved: a catalog named
    after the file failed to open these for writing."""
    path = tmp_path / f"{name}.duckdb"
    wh = DuckDBWarehouse(path)
    try:
        assert wh.live_ids("c1", "Observation") == set()
    finally:
        wh.close()
    with duckdb.connect(str(path), read_only=True) as reader:
        assert reader.execute("SELECT count(*) FROM fhir_resources").fetchone() == (0,)
