"""Landed Bulk files are merged in groups (engine/bulk_merge_group.py): each merges into the group's transaction as it
lands; whatever the group size, an export ends with the same warehouse, the same report and every file ``done``; no
file is ``done`` before its group commits, and a failed group leaves nothing of it merged."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from engine import BulkReport, run_bulk_export
from engine.bulk_merge_group import MergeGroup
from engine.bulk_state import FileView
from engine.models import BulkJobFile
from sandbox.data.generator import Generator
from tests.engine.helpers import connect_backend, content_fingerprint, make_environment
from tests.warehouse.conftest import land, resource
from warehouse import (
    LandedFile,
    LandingZone,
    UpsertStats,
    WarehouseMemoryError,
    land_ndjson_file,
    landed_json_bytes,
    open_warehouse,
)
from warehouse.duckdb_backend import DuckDBWarehouse


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
    real = MergeGroup.flush

    def counting(self: MergeGroup) -> None:
        if self._merged:
            groups.append(len(self._merged))
        real(self)

    monkeypatch.setattr(MergeGroup, "flush", counting)
    one_by_one, report_one, states_one = _export(tmp_path, shared_sb, http, "one", group_bytes=1)
    per_file = list(groups)
    groups.clear()
    together, report_all, states_all = _export(tmp_path, shared_sb, http, "all", group_bytes=1 << 40)

    assert per_file and set(per_file) == {1}, "a 1-byte group commits each landed file on its own"
    assert sum(groups) == len(per_file) and len(groups) < len(per_file), "a large group commits files together"
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
    real = DuckDBWarehouse.upsert
    calls: list[str] = []

    def failing(self: DuckDBWarehouse, landed: LandedFile) -> UpsertStats:
        calls.append(landed.resource_type)
        if len(calls) == 2:  # the first file merged into the group's transaction, then the group fails
            raise OSError("disk full while merging")
        return real(self, landed)

    monkeypatch.setattr(DuckDBWarehouse, "upsert", failing)
    failed = run_bulk_export(world.env, conn, "first")
    assert failed.status == "failed" and "disk full" in (failed.error or "")
    with world.env.db.session() as session:
        states = set(session.scalars(select(BulkJobFile.state).where(BulkJobFile.kind == "output")))
    assert "done" not in states and "landed" in states
    with open_warehouse(world.env.warehouse_target) as wh:
        assert wh.live_ids(conn, calls[0]) == set(), "the first file's merge was rolled back with its group"

    monkeypatch.setattr(DuckDBWarehouse, "upsert", real)
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
        assert len(wh.live_ids("c1", "Observation")) == 100, "merged into the open transaction as it landed"
        group.add(views[1], files[1])  # two files' JSON reach the bound: merged and marked done together
        assert merged == ["file0", "file1"]
        group.add(views[2], files[2])
        group.flush()
        assert merged == ["file0", "file1", "file2"]
        assert len(wh.live_ids("c1", "Observation")) == 300


def test_a_group_out_of_memory_rolls_back_and_merges_its_files_one_at_a_time(tmp_path, caplog) -> None:
    zone = LandingZone(tmp_path / "zone")
    files = [land(zone, [resource(f"o{k}-{i}") for i in range(50)], run_id=f"r{k}") for k in range(3)]
    views = [FileView(k, "output", "Observation", f"file{k}", None, "landed", None, 0) for k in range(3)]
    merged: list[str] = []
    with open_warehouse(str(tmp_path / "wh.duckdb")) as wh:
        assert isinstance(wh, DuckDBWarehouse)
        real = wh.upsert
        in_group: list[bool] = []

        def upsert(landed: LandedFile) -> UpsertStats:
            in_group.append(wh.in_transaction)
            if wh.in_transaction and len(in_group) == 3:  # the group's third file does not fit in memory
                raise WarehouseMemoryError("DuckDB ran out of its memory limit (64MB) in transaction: simulated")
            return real(landed)

        wh.upsert = upsert  # type: ignore[method-assign]
        with MergeGroup(wh, BulkReport("run", "c1"), lambda f, landed: merged.append(f.url), 1 << 40) as group:
            for view, landed in zip(views, files, strict=True):
                group.add(view, landed)
            assert merged == ["file0", "file1", "file2"], "the fallback committed and recorded each file"
        assert in_group == [True, True, True, False, False, False]
        assert len(wh.live_ids("c1", "Observation")) == 150
    assert "merging them one at a time" in caplog.text


def test_leaving_the_group_on_an_error_rolls_back_what_it_merged(tmp_path) -> None:
    zone = LandingZone(tmp_path / "zone")
    landed = land(zone, [resource(f"o{i}") for i in range(20)], run_id="r0")
    merged: list[str] = []
    with open_warehouse(str(tmp_path / "wh.duckdb")) as wh:
        group = MergeGroup(wh, BulkReport("run", "c1"), lambda f, lf: merged.append(f.url), 1 << 40)
        with pytest.raises(KeyboardInterrupt), group:
            group.add(FileView(0, "output", "Observation", "file0", None, "landed", None, 0), landed)
            raise KeyboardInterrupt
        assert merged == [] and wh.live_ids("c1", "Observation") == set()
        assert not wh.in_transaction


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


def _view(k: int) -> FileView:
    return FileView(k, "output", "Observation", f"file{k}", None, "landed", None, 0)


def _merge_under_16mb(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, files: list[LandedFile]
) -> tuple[DuckDBWarehouse, list[str]]:
    """Add ``files`` to one group on a 16 MB warehouse, expecting the memory error that names the limit; returns
    the warehouse (open) and the urls recorded done."""
    merged: list[str] = []
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="16MB")
    group = MergeGroup(wh, BulkReport("run", "c" * 32), lambda f, landed: merged.append(f.url), 1 << 40)
    with (
        caplog.at_level(logging.WARNING, logger="engine.bulk_merge_group"),
        pytest.raises(WarehouseMemoryError, match="16MB"),
        group,
    ):
        for k, landed in enumerate(files):
            group.add(_view(k), landed)
    return wh, merged


def test_a_group_that_runs_out_of_memory_is_merged_again_one_file_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DuckDB holds a transaction's new rows in memory until it commits, and a group of files that does not fit
    must not fail an export whose files fit one at a time: the group is rolled back and merged file by file.
    (Whether a given group fits depends on DuckDB's threads, so the test makes the last file too large for the
    limit even alone: the retry then merges and records the first file, fails on the last one loudly without
    recording it, and a replay of what is not done, with more memory, completes with exact counts.)"""
    zone = LandingZone(tmp_path / "zone")
    small = land(zone, [resource(f"s{k}") for k in range(50)], connection_id="c" * 32, run_id="r0")
    large = _observation_files(zone, tmp_path, patients=600, rows_per_file=100_000)[0]
    wh, merged = _merge_under_16mb(tmp_path, caplog, [small, large])
    assert "merging 2 landed files in one transaction ran out of memory" in caplog.text
    assert len(wh.live_ids("c" * 32, "Observation")) == 50  # merged by the retry, alone
    assert merged == ["file0"], "the retry's committed file is done; the one that failed is not"
    wh.close()
    roomy = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="256MB")
    report = BulkReport("run2", "c" * 32)
    with MergeGroup(roomy, report, lambda f, landed: merged.append(f.url), 1 << 40) as again:
        again.add(_view(1), large)  # the next run replays what is not done
    roomy.close()
    assert merged == ["file0", "file1"]
    observations = report.types["Observation"]
    assert (observations.created, observations.unchanged) == (large.rows, 0)
    with DuckDBWarehouse(tmp_path / "wh.duckdb") as final:
        assert len(final.live_ids("c" * 32, "Observation")) == 50 + large.rows


def test_a_single_file_that_does_not_fit_fails_loudly_without_a_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing smaller to retry: the memory error names the limit, and nothing is merged or marked done."""
    zone = LandingZone(tmp_path / "zone")
    files = _observation_files(zone, tmp_path, patients=600, rows_per_file=100_000)
    wh, merged = _merge_under_16mb(tmp_path, caplog, files[:1])
    assert "one at a time" not in caplog.text
    assert wh.live_ids("c" * 32, "Observation") == set() and merged == []
    wh.close()


def test_a_group_whose_commit_runs_out_of_memory_is_merged_again_one_file_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit writes the group's rows out and can run out of the limit itself (the warehouse then raises
    ``WarehouseMemoryError`` with nothing committed, tests/warehouse/test_merge_memory.py): the group's files are
    merged again one at a time, each committed alone, and only then recorded done."""
    zone = LandingZone(tmp_path / "zone")
    files = [land(zone, [resource(f"o{k}-{i}") for i in range(30)], run_id=f"r{k}") for k in range(2)]
    merged: list[str] = []
    with open_warehouse(str(tmp_path / "wh.duckdb")) as wh:
        assert isinstance(wh, DuckDBWarehouse)
        real = wh.transaction
        failures = [WarehouseMemoryError("DuckDB ran out of its memory limit (64MB) in the commit of transaction")]

        @contextlib.contextmanager
        def transaction() -> Iterator[None]:
            with real():  # raising inside rolls the group back: as a failed commit leaves it
                yield
                if failures:
                    raise failures.pop()

        wh.transaction = transaction  # type: ignore[method-assign]
        group = MergeGroup(wh, BulkReport("run", "c1"), lambda f, landed: merged.append(f.url), 1 << 40)
        with caplog.at_level(logging.WARNING, logger="engine.bulk_merge_group"), group:
            for k, landed in enumerate(files):
                group.add(_view(k), landed)
        assert merged == ["file0", "file1"]
        assert len(wh.live_ids("c1", "Observation")) == 60
    assert "merging 2 landed files in one transaction ran out of memory" in caplog.text


def _documents(zone: LandingZone, prefix: str, count: int, size: int) -> LandedFile:
    """Documents with an inline attachment of ``size`` bytes of text that does not compress away."""
    rng = random.Random(size)
    lines = (resource(f"{prefix}{k}", note=rng.randbytes(size // 2).hex()) for k in range(count))
    return land(zone, lines, run_id=f"documents-{prefix}")


def test_a_group_runs_at_half_the_limit_and_falls_back_to_the_whole_one_for_medium_resources(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ordinary files merge under half the limit, with no retry. 60 MB of 100 KB documents run out there (DuckDB
    holds a transaction's new rows uncompressed until the commit): that group is rolled back and merged again
    file by file under the whole limit, where it fits, and the rest of the export stays under the whole limit."""
    zone = LandingZone(tmp_path / "zone")
    ordinary = [land(zone, [resource(f"o{k}-{i}") for i in range(2_000)], run_id=f"r{k}") for k in range(2)]
    documents = _documents(zone, "d", 600, 100_000)
    merged: list[str] = []
    limits: list[str] = []
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", threads=1)  # the default limit, 128 MB
    with wh:
        real = wh.upsert

        def upsert(landed: LandedFile) -> UpsertStats:
            assert wh._held is not None
            row = wh._held.execute("SELECT current_setting('memory_limit')").fetchone()
            assert row is not None
            limits.append(str(row[0]))
            return real(landed)

        wh.upsert = upsert  # type: ignore[method-assign]
        report = BulkReport("run", "c1")
        # the export holds the warehouse's connection throughout (engine.bulk_files._WarehouseTurn)
        with (
            wh.batch(),
            caplog.at_level(logging.WARNING, logger="engine.bulk_merge_group"),
            MergeGroup(wh, report, lambda f, landed: merged.append(f.url), 1) as group,  # a group per file
        ):
            group.add(_view(0), ordinary[0])
            assert "one at a time" not in caplog.text
            group.add(_view(1), documents)
            group.add(_view(2), ordinary[1])
        lean, whole = limits[0], limits[-1]
        assert lean != whole and limits == [lean, lean, whole, whole], limits
        assert "merging 1 landed files in one transaction ran out of memory" in caplog.text
        assert "under the whole memory limit, and the rest of this export too" in caplog.text
        assert merged == ["file0", "file1", "file2"]
        assert report.types["Observation"].created == 2 * 2_000 + 600
        assert len(wh.live_ids("c1", "Observation")) == 2 * 2_000 + 600


def test_a_lean_group_of_one_file_whose_commit_runs_out_is_merged_again_under_the_whole_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under half the limit even one file is worth a retry: its commit ran out of memory, so it is merged again,
    alone, under the whole limit (a group at the whole limit with one file has nothing smaller to try)."""
    zone = LandingZone(tmp_path / "zone")
    landed = land(zone, [resource(f"o{i}") for i in range(30)], run_id="r0")
    merged: list[str] = []
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    with wh:
        real = wh.transaction
        failures = [WarehouseMemoryError("DuckDB ran out of its memory limit (61MiB) in the commit of transaction")]

        @contextlib.contextmanager
        def transaction() -> Iterator[None]:
            with real():
                yield
                if failures:
                    raise failures.pop()

        wh.transaction = transaction  # type: ignore[method-assign]
        group = MergeGroup(wh, BulkReport("run", "c1"), lambda f, lf: merged.append(f.url), 1 << 40)
        with wh.batch(), caplog.at_level(logging.WARNING, logger="engine.bulk_merge_group"), group:
            group.add(_view(0), landed)
        assert merged == ["file0"] and not failures
        assert len(wh.live_ids("c1", "Observation")) == 30
    assert "merging them one at a time under the whole memory limit" in caplog.text
