"""DuckDB reads attach the file to an in-memory instance the thread keeps (``warehouse._duckdb_reader``).

Opening a DuckDB file builds a whole instance (about 14 ms of CPU); a per-connection sync run read the warehouse
once per type for its duplicate-keys checks (BDX-24) and paid that each time. The file must still be let go after
every read (a writer in another process opens it at once), and a read that fails or nests must not disturb the next.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import duckdb
import pytest

from tests.warehouse.conftest import land, resource
from tests.warehouse.other_process import in_child, other_process_writes
from warehouse import LandingZone, _duckdb_reader, _duckdb_writer, _pg_chunks
from warehouse.duckdb_backend import DuckDBWarehouse


def _stored(tmp_path: Path, zone: LandingZone) -> DuckDBWarehouse:
    wh = DuckDBWarehouse(tmp_path / "wh.duckdb")
    wh.upsert(land(zone, [resource(f"o{i}") for i in range(3)]))
    return wh


def test_reads_in_one_thread_share_one_instance(tmp_path: Path, zone: LandingZone, opened: list[str]) -> None:
    wh = _stored(tmp_path, zone)
    opened.clear()
    for _ in range(10):
        assert wh.key_counts("c1", "Observation").live == 3
    assert len(opened) <= 1  # at most the thread's first read opens one; the others attach to it
    wh.close()


def test_a_read_lets_go_of_the_file(tmp_path: Path, zone: LandingZone) -> None:
    wh = _stored(tmp_path, zone)
    assert wh.key_counts("c1").live == 3
    assert other_process_writes(wh.path) == "wrote, saw 3"
    wh.close()


def test_a_failed_read_and_a_nested_read_leave_the_next_read_whole(tmp_path: Path, zone: LandingZone) -> None:
    wh = _stored(tmp_path, zone)
    with pytest.raises(duckdb.CatalogException), wh._read() as cur:
        cur.execute("SELECT * FROM no_such_table")
    with wh._read() as outer:
        outer.execute("SELECT count(*) FROM fhir_resources")
        assert wh.key_counts("c1").live == 3  # a read inside a read
        assert outer.fetchone() == (3,)
    assert len(wh.live_ids("c1", "Observation")) == 3
    assert other_process_writes(wh.path) == "wrote, saw 3"
    wh.close()


def _read_in_child(wh: DuckDBWarehouse, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    queue.put(wh.key_counts("c1").live)


def test_a_forked_child_reads_after_its_parent_kept_instances(tmp_path: Path, zone: LandingZone) -> None:
    """A process that read (an instance kept idle, in this thread and in another one still alive) then forks: the
    child must live and read. Its copy of an instance has none of DuckDB's threads, so destroying it crashed it
    (SIGSEGV, at the fork itself for another thread's instance)."""
    wh = _stored(tmp_path, zone)
    assert wh.key_counts("c1").live == 3
    done, release = threading.Event(), threading.Event()

    def reader() -> None:
        wh.key_counts("c1")
        done.set()
        release.wait(60)

    other = threading.Thread(target=reader, daemon=True)
    other.start()
    try:
        assert done.wait(60)
        assert in_child("fork", _read_in_child, wh) == 3
    finally:
        release.set()
        other.join(60)
    assert wh.key_counts("c1").live == 3  # the parent reads on
    wh.close()


def _os_threads() -> int:
    return sum(1 for _ in Path("/proc/self/task").iterdir())


def _threads_per_instance(wh: DuckDBWarehouse) -> int:
    """OS threads one DuckDB instance of ``wh``'s configuration starts (its workers and I/O threads)."""
    before = _os_threads()
    probe = duckdb.connect(":memory:", config={"threads": wh._config["threads"]})
    per_instance = max(_os_threads() - before, 1)
    probe.close()
    return per_instance


def test_a_pool_of_reading_threads_keeps_few_instances(tmp_path: Path, zone: LandingZone) -> None:
    """Threads of a pool that each read once (the auth service's request threads) keep at most two idle
    instances between them, not one each: an instance holds DuckDB's worker and I/O threads (9 with threads=2)
    and a few MB, so 40 request threads kept 360 threads and 150 MB until they ended.

    Counted once every read has returned: while reads run, the two instances of their own and DuckDB's cached
    instances of the plain connections past them (one closing while the next opens) held up to seven instances'
    threads at once under load; a count taken half a second after the threads started caught that (CI, load 8)."""
    wh = _stored(tmp_path, zone)
    for pool in (_duckdb_reader._pool, _duckdb_writer._pool, _pg_chunks._pool):
        pool.close_idle()  # instances earlier tests of this worker left idle are not this test's to count
    before = _os_threads()
    per_instance = _threads_per_instance(wh)
    gate = threading.Barrier(8)
    read, release = threading.Semaphore(0), threading.Event()

    def reader() -> None:
        gate.wait(60)  # all at once: each opens its own instance
        try:
            wh.key_counts("c1")
        finally:
            read.release()
        release.wait(60)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        assert all(read.acquire(timeout=60) for _ in threads)  # every read done; its thread lives on
        assert _os_threads() - before <= 8 + _duckdb_reader.MAX_IDLE * per_instance
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    wh.close()


def test_concurrent_reads_open_at_most_two_instances_of_their_own(tmp_path: Path, zone: LandingZone) -> None:
    """Eight reads at once (the auth service's request threads): two read through instances of their own, the rest
    through plain connections, which share DuckDB's one cached database of the file (one memory limit, one set of
    threads), as every read did before. Each read opening its own instance made eight memory limits and 72 threads."""
    wh = _stored(tmp_path, zone)
    before = _os_threads()
    per_instance = _threads_per_instance(wh)
    inside, release = threading.Barrier(9), threading.Event()
    counts: list[int] = []

    def reader() -> None:
        with wh._read() as cursor:
            cursor.execute("SELECT count(*) FROM fhir_resources")
            row = cursor.fetchone()
            counts.append(int(row[0]) if row else -1)
            inside.wait(60)  # all eight hold their read
            release.wait(60)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        inside.wait(60)
        assert _os_threads() - before <= 8 + 3 * per_instance + 2
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    assert counts == [3] * 8
    assert wh.key_counts("c1").live == 3
    wh.close()
