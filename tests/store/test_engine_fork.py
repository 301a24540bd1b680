"""A child forked with an ``AppDatabase`` open (``os.fork``, ``multiprocessing``'s fork start) never uses or closes
its parent's pooled connections, on either dialect (``store._engines``): two processes on one PostgreSQL socket
corrupt the protocol state of both, and SQLite forbids a connection's use after a fork."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import uuid
from typing import Any

from sqlalchemy import Connection, select, text

from store import AppDatabase
from store._engines import _LOCK
from store.models import Tenant


def _backend(conn: Connection) -> object:
    """Who answers on this connection: PostgreSQL's server process; on SQLite, the driver connection itself
    (fork copies memory, so the same id in the child is the parent's object)."""
    if conn.dialect.name == "postgresql":
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()
    return id(conn.connection.dbapi_connection)


def _add_tenant(db: AppDatabase, name: str) -> object:
    with db.locked_session() as s:
        s.add(Tenant(id=uuid.uuid4().hex, name=name))
        return _backend(s.connection())


def _names(conn: Connection) -> list[str]:
    return sorted(conn.execute(select(Tenant.name)).scalars())


def _in_child(write_end: int, work: Any) -> None:
    """Run ``work`` in this forked child, send its JSON answer (or its error) to the parent and leave without
    unwinding the parent's frames (what ``multiprocessing`` does too). A child that hangs is killed."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not the parent's handler (pytest-timeout's)
    signal.alarm(60)
    try:
        answer: object = work()
    except BaseException as exc:  # reported to the parent, which fails the test
        answer = repr(exc)
    try:
        os.write(write_end, json.dumps(answer).encode())
    finally:
        os._exit(0)


def _fork(work: Any) -> object:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _in_child(write_end, work)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        got = answer.read()
    os.waitpid(pid, 0)
    return json.loads(got) if got else "the child sent nothing"


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_working(db: AppDatabase) -> None:
    """The parent has one connection idle in the pool and one in use across the fork; the child writes, reads and
    disposes the database it inherited. Both of the parent's connections still answer from the same server
    process (``pool_pre_ping`` would silently replace one the child broke), and the child used neither."""

    def child() -> object:
        used = _add_tenant(db, "child")
        with db.engine.connect() as conn:
            names = _names(conn)
        db.dispose()  # closes the child's own connections only
        gc.collect()  # nothing of the parent's is closed by its copies being collected
        return [str(used), names]

    with db.engine.connect() as held:
        in_use = _backend(held)
        held.rollback()  # no transaction open: the parent's write below waits for none
        idle = _add_tenant(db, "parent")  # on a second connection, idle in the pool at the fork
        answer = _fork(child)
        assert _backend(held) == in_use  # the connection the parent held across the fork still works
        assert _names(held) == ["child", "parent"]
    assert isinstance(answer, list), answer
    used, names = answer
    assert names == ["child", "parent"]
    assert used not in {str(idle), str(in_use)}
    assert _add_tenant(db, "parent again") in {idle, in_use}  # a pooled connection of the parent, not a new one


def test_a_child_forked_while_another_thread_opens_a_database_can_open_one(db: AppDatabase) -> None:
    """A thread inside ``AppDatabase.from_url`` at the fork held the engines' lock; the child's copy of it stayed
    locked forever, so the child hung at its first ``from_url``."""
    url = db.engine.url.render_as_string(hide_password=False)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _LOCK:
            holding.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(60)
    try:
        answer = _fork(lambda: _add_tenant(AppDatabase.from_url(url), "child") is not None)
    finally:
        release.set()
        thread.join(60)
    assert answer is True
