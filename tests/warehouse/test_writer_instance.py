"""DuckDB write batches attach the file to an in-memory instance kept idle between them (``warehouse._duckdb_writer``).

A sync run writes one batch per resource type, and each opened a whole new instance (about 14 ms of CPU). The file
must still be checkpointed and let go when a batch ends (another process opens it at once), and nothing one batch
changed (a setting, a temporary table, a prepared statement, a failed statement) may reach the next batch.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import resource as resource_module
import signal
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tests.warehouse.conftest import land, resource
from tests.warehouse.other_process import in_child, other_process_writes
from warehouse import LandingZone, WarehouseMemoryError, _duckdb_io, _duckdb_writer, duckdb_backend
from warehouse._duck_merge import merge_chunk
from warehouse.duckdb_backend import DuckDBWarehouse

_WAREHOUSE = Path(duckdb_backend.__file__).parent


def test_write_batches_share_one_instance(tmp_path: Path, zone: LandingZone, opened: list[str]) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")  # its schema batch keeps an instance idle
    files = [land(zone, [resource(f"o{n}")], run_id=f"r{n}") for n in range(10)]
    opened.clear()
    for landed in files:
        assert wh.upsert(landed).inserted == 1
    assert opened == []
    assert len(wh.live_ids("c1", "Observation")) == 10
    wh.close()


def test_a_batch_checkpoints_the_file_and_lets_go_of_it(tmp_path: Path, zone: LandingZone) -> None:
    """Another process opens the file read-write the moment a batch ends, and finds every row in the file itself
    (DuckDB's log checkpointed into it at the detach, as at a close)."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    wh.upsert(land(zone, [resource(f"o{i}") for i in range(3)]))
    assert not Path(f"{wh.path}.wal").exists()
    assert other_process_writes(wh.path) == "wrote, saw 3"
    wh.upsert(land(zone, [resource("o3")], run_id="r2"))  # the instance kept idle attaches it again
    assert other_process_writes(wh.path) == "wrote, saw 4"
    wh.close()


def _settings(wh: DuckDBWarehouse) -> dict[str, str]:
    names = (*_duckdb_writer.CHECKED_SETTINGS, "preserve_insertion_order", "temp_directory", "threads")
    with wh.batch():
        assert wh._held is not None
        row = wh._held.execute("SELECT " + ", ".join(f"current_setting('{n}')" for n in names)).fetchone()
        assert row is not None
        return dict(zip(names, map(str, row), strict=True))


@pytest.mark.parametrize(
    "change",
    [
        "SET memory_limit = '50MB'",
        "SET threads = 1",
        "SET disabled_optimizers = 'build_side_probe_side'",
        "SET preserve_insertion_order = true",
        "SET temp_directory = '/tmp/elsewhere'",
        "SET TimeZone = 'America/New_York'",
        "SET GLOBAL TimeZone = 'America/New_York'",
        "SET enable_progress_bar = true",
        "USE memory",
    ],
)
def test_a_setting_changed_in_a_batch_is_the_configured_one_in_the_next(tmp_path: Path, change: str) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", memory_limit="100MB", threads=2)
    configured = _settings(wh)
    assert configured["TimeZone"] == "UTC" and configured["memory_limit"] == "95.3 MiB"
    with wh.batch():
        assert wh._held is not None
        wh._held.execute(change)
    assert _settings(wh) == configured
    assert wh.key_counts("c1").live == 0  # the next batch writes the warehouse's catalog: its tables are there
    wh.close()


def test_a_database_a_batch_attached_is_not_kept_attached(tmp_path: Path) -> None:
    """``ATTACH`` is the instance's, not the batch connection's: a file a batch attached (and left attached) must
    not stay attached, and locked, in the idle instance after the batch (another process opens it at once)."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    other = tmp_path / "other.duckdb"
    with wh.batch():
        assert wh._held is not None
        wh._held.execute(f"ATTACH '{other}' AS other_db")
        wh._held.execute("CREATE TABLE other_db.fhir_resources (a INTEGER)")
    assert other_process_writes(other) == "wrote, saw 0"
    with wh.batch():
        assert wh._held is not None
        names = wh._held.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall()
        assert sorted(names) == [("ehrsync_warehouse",), ("memory",)]
    wh.close()


def test_what_a_batch_creates_on_its_connection_is_gone_in_the_next(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    with wh.batch():
        assert wh._held is not None
        for statement in (
            "CREATE TEMP TABLE _winners AS SELECT 1 AS a",
            "CREATE TEMP VIEW _seen AS SELECT 1 AS a",
            "CREATE TEMP MACRO _twice(a) AS a * 2",
            "PREPARE _stale AS SELECT 42",
        ):
            wh._held.execute(statement)
        wh._held.register("_ids_chunk", pa.table({"id": [1]}))
        wh._held.begin()  # a transaction left open: rolled back as a close rolled it back
        wh._held.execute("CREATE TABLE left_open (a INTEGER)")
    with wh.batch():
        conn = wh._held
        assert conn is not None
        assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'temp'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM duckdb_views() WHERE database_name = 'temp'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'left_open'").fetchone() == (0,)
        with pytest.raises(duckdb.Error):
            conn.execute("SELECT _twice(2)")
        with pytest.raises(duckdb.Error):
            conn.execute("EXECUTE _stale")
        conn.begin()  # no transaction is open
        conn.rollback()
    wh.close()


def test_a_failed_write_closes_the_instance_even_when_the_caller_goes_on(
    tmp_path: Path, zone: LandingZone, monkeypatch: pytest.MonkeyPatch, opened: list[str]
) -> None:
    """A merge that failed inside a held batch (a Bulk export's turn goes on to the next file): that batch's
    instance is closed at its end, not kept, and the next batch opens a new one."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    opened.clear()

    def failing(*args: object, **kwargs: object) -> tuple[int, int, int]:
        raise duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate data of size 1.0 MiB")

    with wh.batch():
        monkeypatch.setattr(duckdb_backend, "merge_chunk", failing)
        with pytest.raises(WarehouseMemoryError):
            wh.upsert(land(zone, [resource("o1")]))
        monkeypatch.setattr(duckdb_backend, "merge_chunk", merge_chunk)
        assert wh.upsert(land(zone, [resource("o2")], run_id="r2")).inserted == 1
    assert _duckdb_writer._pool.idle() == 0
    assert wh.upsert(land(zone, [resource("o3")], run_id="r3")).inserted == 1
    assert opened == [":memory:"]  # the next batch's own
    assert _duckdb_writer._pool.idle() == 1
    wh.close()


def _write_in_child(wh: DuckDBWarehouse, path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from warehouse import LandingZone

    landed = land(LandingZone(Path(path)), [resource("child")], run_id="child")
    queue.put(wh.upsert(landed).inserted)


def test_a_forked_child_writes_after_its_parent_kept_an_instance(tmp_path: Path, zone: LandingZone) -> None:
    """The idle instance is closed before a fork: the child's copy would have none of DuckDB's threads."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    wh.upsert(land(zone, [resource("o1")]))
    assert _duckdb_writer._pool.idle() == 1
    assert in_child("fork", _write_in_child, wh, str(tmp_path / "child-landing")) == 1
    assert wh.upsert(land(zone, [resource("o2")], run_id="r2")).inserted == 1  # the parent writes on
    assert len(wh.live_ids("c1", "Observation")) == 3
    wh.close()


def test_every_setting_the_warehouse_sets_is_checked_on_return(tmp_path: Path) -> None:
    """A ``SET``/``RESET`` the DuckDB code runs names a setting the writer checks before keeping its instance (or
    one the instance is opened with): a new one left out would carry into the next batch unseen. (``SET LOCAL``
    is PostgreSQL's, for one transaction.)"""
    checked = {*_duckdb_writer.CHECKED_SETTINGS, "temp_directory", *DuckDBWarehouse(tmp_path / "wh.duckdb")._config}
    found: set[str] = set()
    for source in _WAREHOUSE.glob("*.py"):
        found |= set(re.findall(r"[\"'](?:RE)?SET (?:GLOBAL |SESSION )?(?!LOCAL )(\w+)", source.read_text()))
    assert {"memory_limit", "disabled_optimizers", "TimeZone", "enable_progress_bar"} <= found
    assert found <= checked, found - checked


def _rss_mib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // 2**20


def test_an_idle_instance_keeps_no_memory_its_batch_freed(tmp_path: Path, zone: LandingZone) -> None:
    """DuckDB's allocator kept what a merge freed cached for the instance's threads (~50 MB after 40,000
    resources) while the instance sat idle; closing it gave that back, and the detach must too."""
    files = [
        land(zone, (resource(f"o{n}-{i}", note="x" * 300) for i in range(40_000)), run_id=f"r{n}") for n in range(2)
    ]
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb", threads=2)
    kept = []
    for landed in files:
        assert wh.upsert(landed).inserted == 40_000
        idle = _rss_mib()
        _duckdb_writer._pool.close_idle()
        kept.append(idle - _rss_mib())
    assert min(kept) < 20, kept
    wh.close()


def _batch_on_a_full_disk(path: str, landing: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """A batch whose writes committed, then the disk fills (a file size limit): DuckDB's checkpoint at the detach
    cannot write the file."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    wh, zone = DuckDBWarehouse(path), LandingZone(Path(landing))
    landed = land(zone, (resource(f"o{i}", note="x" * 300) for i in range(5_000)))
    try:
        with wh.batch():
            wh.upsert(landed)
            resource_module.setrlimit(resource_module.RLIMIT_FSIZE, (Path(path).stat().st_size, -1))
    except Exception as exc:
        queue.put(type(exc).__name__)
    finally:
        resource_module.setrlimit(resource_module.RLIMIT_FSIZE, (-1, -1))
    queue.put(len(wh.live_ids("c1", "Observation")))  # the disk has room again: the next open replays the log


def test_a_detach_that_cannot_checkpoint_raises_a_typed_error_and_loses_nothing(tmp_path: Path) -> None:
    """A full disk at the detach (DuckDB: "CHECKPOINT during DETACH failed"): the caller gets a
    ``WarehouseCheckpointError`` (a ``WarehouseError`` the engine reports), not DuckDB's IOException, and the
    batch's committed rows are all there once the file is opened again."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (str(tmp_path / "wh.duckdb"), str(tmp_path / "landing"), queue)
    proc = ctx.Process(target=_batch_on_a_full_disk, args=args)
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    assert queue.get(timeout=5) == "WarehouseCheckpointError"
    assert queue.get(timeout=5) == 5_000


class _InterruptedAfterClose:
    """The batch's connection, an interrupt (Ctrl-C, Dagster terminating the run) arriving as its close returns."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def close(self) -> None:
        self._conn.close()
        raise KeyboardInterrupt


def test_an_interrupt_as_a_batch_ends_lets_go_of_the_file(
    tmp_path: Path, zone: LandingZone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt between the batch's last statement and the detach: the instance is closed then, so the file is
    not left attached here once ``<db>.lock`` is let go (another process opens it at once), even while the
    interrupt's traceback is still held (a run reporting its failure)."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    real = _duckdb_io.configured
    monkeypatch.setattr(_duckdb_writer, "configured", lambda conn: _InterruptedAfterClose(real(conn)))
    with pytest.raises(KeyboardInterrupt) as interrupted, wh.batch():
        wh.upsert(land(zone, [resource("o1")]))
    assert interrupted.traceback is not None
    assert other_process_writes(wh.path) == "wrote, saw 1"
    monkeypatch.setattr(_duckdb_writer, "configured", real)
    assert wh.upsert(land(zone, [resource("o2")], run_id="r2")).inserted == 1
    wh.close()


def _open_and_write_in_child(path: str, landing: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        wh = DuckDBWarehouse(path, lock_timeout_s=60)
        queue.put(wh.upsert(land(LandingZone(Path(landing)), [resource("child")], run_id="child")).inserted)
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def test_a_child_forked_while_a_thread_writes_gets_a_typed_error(tmp_path: Path, zone: LandingZone) -> None:
    """DuckDB's record of the files this process has attached is copied into a forked child, the file another
    thread was writing still in it: the child cannot attach that file, and says so with a typed error naming
    the cause instead of DuckDB's ResourceInUseException (the parent's batch is unharmed)."""
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with wh.batch():
            wh.upsert(land(zone, [resource("o1")]))
            inside.set()
            release.wait(60)
            wh.upsert(land(zone, [resource("o2")], run_id="r2"))

    writer = threading.Thread(target=hold)
    writer.start()
    assert inside.wait(60)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_open_and_write_in_child, args=(str(wh.path), str(tmp_path / "child-landing"), queue))
    try:
        child.start()  # forked inside the batch; it waits for <db>.lock until the parent's batch ends
    finally:
        release.set()
        writer.join(60)
    child.join(60)
    assert child.exitcode == 0
    answer = queue.get(timeout=5)
    assert str(answer).startswith("WarehouseTargetError: DuckDB file wh.duckdb is already attached in this process:")
    assert len(wh.live_ids("c1", "Observation")) == 2
    wh.close()
