"""Landed Bulk files are merged in groups (engine/bulk_merge_group.py): whatever the group size, an export ends
with the same warehouse, the same report and every file ``done``; no file is ``done`` before its group commits."""

from __future__ import annotations

from sqlalchemy import select

from engine import BulkReport, run_bulk_export
from engine.bulk_merge_group import MergeGroup
from engine.bulk_state import FileView
from engine.models import BulkJobFile
from tests.engine.helpers import connect_backend, content_fingerprint, make_environment
from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse, landed_json_bytes, open_warehouse


def _export(tmp_path, sandbox, http, name: str, group_bytes: int):
    world = make_environment(tmp_path / name, http=http)
    world.env.bulk_merge_group_bytes = group_bytes
    conn = connect_backend(world, sandbox, http=http, group_id="grp0")
    report = run_bulk_export(world.env, conn, f"run-{name}")
    assert report.status == "completed", report.error
    with world.env.db.session() as session:
        states = session.scalars(select(BulkJobFile.state).where(BulkJobFile.kind == "output")).all()
    return world, report, states


def test_group_size_changes_nothing_but_the_number_of_transactions(shared_sb, http, tmp_path, monkeypatch) -> None:
    groups: list[int] = []
    real = Warehouse.upsert_many

    def counting(self: Warehouse, files):  # type: ignore[no-untyped-def]
        groups.append(len(files))
        return real(self, files)

    monkeypatch.setattr(Warehouse, "upsert_many", counting)
    one_by_one, report_one, states_one = _export(tmp_path, shared_sb, http, "one", group_bytes=1)
    per_file = list(groups)
    groups.clear()
    together, report_all, states_all = _export(tmp_path, shared_sb, http, "all", group_bytes=1 << 40)

    assert per_file and set(per_file) == {1}, "a 1-byte group merges each landed file on its own"
    assert sum(groups) == len(per_file) and len(groups) < len(per_file), "a large group merges files together"
    assert set(states_one) == set(states_all) == {"done"}
    assert {t: (r.created, r.fetched) for t, r in report_one.types.items()} == {
        t: (r.created, r.fetched) for t, r in report_all.types.items()
    }
    assert content_fingerprint(one_by_one.env.warehouse_target, with_connection=False) == content_fingerprint(
        together.env.warehouse_target, with_connection=False
    )


def test_a_failed_group_leaves_its_files_landed_for_the_next_run(shared_sb, http, tmp_path, monkeypatch) -> None:
    world = make_environment(tmp_path / "w", http=http)
    world.env.bulk_merge_group_bytes = 1 << 40
    conn = connect_backend(world, shared_sb, http=http, group_id="grp0")
    real = Warehouse.upsert_many

    def failing(self: Warehouse, files):  # type: ignore[no-untyped-def]
        real(self, files[:1])  # one file merged (and committed), then the group fails: a replay must be exact
        raise OSError("disk full while merging")

    monkeypatch.setattr(Warehouse, "upsert_many", failing)
    failed = run_bulk_export(world.env, conn, "first")
    assert failed.status == "failed" and "disk full" in (failed.error or "")
    with world.env.db.session() as session:
        states = set(session.scalars(select(BulkJobFile.state).where(BulkJobFile.kind == "output")))
    assert "done" not in states and "landed" in states

    monkeypatch.setattr(Warehouse, "upsert_many", real)
    report = run_bulk_export(world.env, conn, "second")
    assert report.status == "completed", report.error
    assert report.resumed
    with world.env.db.session() as session:
        assert set(session.scalars(select(BulkJobFile.state).where(BulkJobFile.kind == "output"))) == {"done"}


def test_a_group_is_sized_by_its_uncompressed_json_not_by_the_parquet_files(tmp_path) -> None:
    """Parquet compresses landed JSON about tenfold: sized by file size, a whole 10,000-patient export waited for
    one transaction at its end, so nothing merged while files landed and DuckDB held all of it at once."""
    zone = LandingZone(tmp_path / "zone")
    files = [land(zone, [resource(f"o{k}-{i}", note="n" * 2000) for i in range(100)], run_id=f"r{k}") for k in range(3)]
    one_file = landed_json_bytes(files[0])
    assert one_file > 10 * files[0].bytes
    merged: list[str] = []
    with open_warehouse(str(tmp_path / "wh.duckdb")) as wh:
        group = MergeGroup(wh, BulkReport("run", "c1"), lambda f, landed: merged.append(f.url), max_bytes=2 * one_file)
        views = [FileView(k, "output", "Observation", f"file{k}", None, "landed", None, 0) for k in range(3)]
        group.add(views[0], files[0])
        assert merged == []
        group.add(views[1], files[1])  # two files' JSON reach the bound: merged and marked done together
        assert merged == ["file0", "file1"]
        group.add(views[2], files[2])
        group.flush()
        assert merged == ["file0", "file1", "file2"]
        assert len(wh.live_ids("c1", "Observation")) == 300
