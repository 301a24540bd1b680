"""The SQLite app database reuses its connections (``store._sqlite_pool``) and behaves as with one per session."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from store import AppDatabase
from store._engines import _INHERITED, MAX_SHARED_ENGINES
from store._sqlite_pool import _OPENED_BY, SQLITE_POOL_SIZE
from store.models import Tenant
from tests.fixtures.app_db import copy_migrated_sqlite


@pytest.fixture
def path(tmp_path: Path) -> Path:
    copy_migrated_sqlite(tmp_path / "app.db")
    return tmp_path / "app.db"


@pytest.fixture
def db(path: Path) -> Iterator[AppDatabase]:
    database = AppDatabase.from_url(f"sqlite:///{path}")
    yield database
    database.dispose()


def _add_tenant(db: AppDatabase, name: str = "T") -> None:
    with db.locked_session() as s:
        s.add(Tenant(id=uuid.uuid4().hex, name=name))


def _tenant_names(db: AppDatabase) -> list[str]:
    with db.session() as s:
        return sorted(s.scalars(select(Tenant.name)))


def _other_process(path: Path, statement: str) -> str:
    """``statement`` from another process, waiting for no lock (timeout 0): its first row, or the error's text."""
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n    print(c.execute(sys.argv[2]).fetchone())\n"
        "except sqlite3.OperationalError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), statement], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_sessions_reuse_the_same_sqlite_connections(db: AppDatabase) -> None:
    """Every session used to open a new connection and run four PRAGMAs (~8% of a sync's CPU)."""
    opened: list[object] = []
    event.listen(db.engine, "connect", lambda conn, _record: opened.append(conn))
    db.dispose()
    for n in range(20):
        _add_tenant(db, f"T{n}")
        assert len(_tenant_names(db)) == n + 1
    assert len(opened) == 1


def test_an_idle_pooled_connection_blocks_no_other_process(db: AppDatabase, path: Path) -> None:
    """Returned connections are rolled back, also after an error: another process writes and checkpoints the
    WAL at once (timeout 0), with every pooled connection idle."""
    _add_tenant(db)
    with pytest.raises(RuntimeError), db.locked_session() as s:
        s.add(Tenant(id="lost", name="L"))
        s.flush()
        raise RuntimeError("the caller failed")
    with db.session() as s:  # a session closed with a write flushed and neither committed nor rolled back
        s.add(Tenant(id="lost2", name="L"))
        s.flush()
    with db.session() as s:
        assert s.execute(select(Tenant.id)).first() is not None  # a read left unfinished
    raw = db.engine.raw_connection()  # a transaction SQLAlchemy never saw: the pool's reset on return ends it
    raw.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    raw.close()
    assert db.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    assert _other_process(path, "BEGIN IMMEDIATE") == "None"
    assert _other_process(path, "PRAGMA wal_checkpoint(TRUNCATE)") == "(0, 0, 0)"
    assert _tenant_names(db) == ["T"]


def test_begin_immediate_on_a_reused_connection_holds_the_write_lock(db: AppDatabase, path: Path) -> None:
    """``sqlite_immediate`` belongs to the session's connection, not to the pooled driver connection."""
    with db.session() as s:
        s.execute(text("SELECT 1"))  # a deferred transaction first, on the connection reused next
    with db.locked_session() as s:
        s.execute(text("SELECT 1"))  # the transaction begins at first use
        assert "database is locked" in _other_process(path, "BEGIN IMMEDIATE")
    with db.session() as s, s.begin():
        s.execute(text("SELECT 1"))  # deferred again: a reader takes no write lock
        assert _other_process(path, "BEGIN IMMEDIATE") == "None"


def test_threads_never_share_a_connection_and_none_waits_for_one(db: AppDatabase) -> None:
    threads, rounds = SQLITE_POOL_SIZE + 3, 15
    held: set[int] = set()
    shared: list[int] = []
    guard = threading.Lock()
    started = threading.Barrier(threads)

    def checkout(conn: Any, _record: Any, _proxy: Any) -> None:
        with guard:
            if id(conn) in held:
                shared.append(id(conn))
            held.add(id(conn))

    def checkin(conn: Any, _record: Any) -> None:
        with guard:
            held.discard(id(conn))

    event.listen(db.engine, "checkout", checkout)
    event.listen(db.engine, "checkin", checkin)

    def work() -> None:
        started.wait()
        for _ in range(rounds):
            _add_tenant(db)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert shared == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Tenant)) == threads * rounds
    assert db.engine.pool.checkedin() <= SQLITE_POOL_SIZE  # type: ignore[attr-defined]


def test_a_migration_connection_is_never_pooled(db: AppDatabase) -> None:
    """Foreign keys are off while a migration runs; no later session may get that connection."""
    db.migrate()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def _replace_file(path: Path, name: str) -> None:
    """What ``ehrsync demo`` or another process does: delete the folder, put a new database there, write."""
    shutil.rmtree(path.parent)
    copy_migrated_sqlite(path)
    other = sqlite3.connect(path)
    other.execute(
        "INSERT INTO tenants (id, name, settings, created_at, updated_at) VALUES ('new', ?, '{}', ?, ?)",
        (name, "2026-01-01", "2026-01-01"),
    )
    other.commit()
    other.close()


def test_a_replaced_database_file_is_opened_again_and_nothing_written_is_lost(db: AppDatabase, path: Path) -> None:
    _add_tenant(db, "old")
    assert db.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    _replace_file(path, "replacement")
    assert _tenant_names(db) == ["replacement"]
    _add_tenant(db, "written after")
    reader = sqlite3.connect(path)  # another reader of the new file sees the write
    assert sorted(n for (n,) in reader.execute("SELECT name FROM tenants")) == ["replacement", "written after"]
    reader.close()
    for file in path.parent.glob("app.db*"):  # deleted: the next session makes a new file, as a new connection did
        file.unlink()
    with db.session() as s:
        assert s.execute(text("SELECT count(*) FROM sqlite_master")).scalar() == 0


def test_a_uri_filename_url_is_pooled_as_a_plain_path_is(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///file:...?uri=true`` (SQLite's URI filenames) worked with a connection per session; the pool's
    file check stat'ed the URI text, found no such file and refused every connection ("This connection is
    closed"). The check now reads the file SQLite opened (``PRAGMA database_list``)."""
    monkeypatch.chdir(tmp_path)  # from_url made the URI's "folder" relative to it (tests/store/test_sqlite_uri.py)
    db = AppDatabase.from_url(f"sqlite:///file:{path}?mode=rw&uri=true")
    opened: list[object] = []
    event.listen(db.engine, "connect", lambda conn, _record: opened.append(conn))
    try:
        _add_tenant(db, "by uri")
        assert _tenant_names(db) == ["by uri"]
        assert len(opened) == 1
        _replace_file(path, "replacement")  # the file check still applies
        assert _tenant_names(db) == ["replacement"]
    finally:
        db.dispose()


def test_dispose_and_eviction_close_the_pooled_connections(db: AppDatabase, path: Path, tmp_path: Path) -> None:
    _add_tenant(db)
    assert Path(f"{path}-wal").exists()  # an idle pooled connection keeps the WAL
    db.dispose()
    assert not Path(f"{path}-wal").exists()  # the last close checkpointed it into the file and deleted it
    _add_tenant(db)
    for n in range(MAX_SHARED_ENGINES):
        AppDatabase.from_url(f"sqlite:///{tmp_path / f'other{n}.db'}")
    assert AppDatabase.from_url(f"sqlite:///{path}").engine is not db.engine  # evicted
    assert db.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert not Path(f"{path}-wal").exists()


def test_a_connection_opened_by_another_process_is_set_aside_unclosed(db: AppDatabase) -> None:
    """A child forked by C code (no ``os.register_at_fork`` hook ran) still never uses its parent's connection."""
    _add_tenant(db)
    parent = db.engine.pool._pool.queue[0]  # type: ignore[attr-defined]
    parent.info[_OPENED_BY] = (-1, *parent.info[_OPENED_BY][1:])
    first = parent.dbapi_connection
    with db.session() as s:
        assert s.connection().connection.dbapi_connection is not first
    assert first in _INHERITED
    assert first.execute("SELECT 1").fetchone() == (1,)  # not closed
    _INHERITED.remove(first)
    first.close()


def _child(db: AppDatabase, used: list[int], inherited: list[sqlite3.Connection], queue: mp.Queue[object]) -> None:
    try:
        _add_tenant(db, "child")
        names = _tenant_names(db)
        db.dispose()  # must not close the parent's connections it inherited (SQLite forbids it after a fork)
        for conn in inherited:
            conn.total_changes  # noqa: B018 -- raises ProgrammingError on a closed connection; no I/O
        queue.put((sorted(used), names))
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


def test_a_forked_child_never_uses_or_closes_its_parents_connections(db: AppDatabase) -> None:
    used: list[int] = []
    event.listen(db.engine, "checkout", lambda conn, _record, _proxy: used.append(id(conn)))
    with db.session() as s, db.session() as t, db.session() as u:  # three idle: the child checks out two
        for session in (s, t, u):
            session.execute(text("SELECT 1"))
    _add_tenant(db, "parent")
    parents = set(used)
    used.clear()
    inherited = [record.dbapi_connection for record in db.engine.pool._pool.queue]  # type: ignore[attr-defined]
    assert len(inherited) == 3
    ctx = mp.get_context("fork")
    queue: mp.Queue[object] = ctx.Queue()
    child = ctx.Process(target=_child, args=(db, used, inherited, queue))
    child.start()
    answer = queue.get(timeout=120)
    child.join(120)
    assert child.exitcode == 0, answer
    assert isinstance(answer, tuple), answer
    child_used, names = answer
    assert names == ["child", "parent"]
    assert not parents & set(child_used)  # memory is copied by fork: the same id would be a parent's connection
    _add_tenant(db, "parent again")  # the parent's pooled connection still works
    assert set(used) <= parents
    assert _tenant_names(db) == ["child", "parent", "parent again"]


def test_the_wal_file_is_cut_back_after_a_large_transaction(db: AppDatabase, path: Path) -> None:
    """With pooled connections open, the last close no longer deletes the -wal file; after a large transaction it
    is cut back to ``SQLITE_WAL_SIZE_LIMIT`` once checkpointed (a long-lived daemon's file stayed at its peak)."""
    from store.database import SQLITE_WAL_SIZE_LIMIT

    with db.session() as s:
        s.execute(text("CREATE TABLE big (b BLOB)"))
        rows = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24) "
        s.execute(text(rows + "INSERT INTO big SELECT randomblob(1048576) FROM n"))
        s.commit()
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 3 * SQLITE_WAL_SIZE_LIMIT  # the transaction went through the WAL
    _add_tenant(db)  # the big commit's checkpoint copied the WAL back; the next write restarts it, cut to the limit
    assert wal.stat().st_size <= SQLITE_WAL_SIZE_LIMIT
