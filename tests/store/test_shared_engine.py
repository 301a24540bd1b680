"""Issue 14: a process keeps one engine per app database URL, so opening the database for every Dagster step
or sensor tick (``AppDatabaseResource.open``) no longer leaves one more engine behind each time."""

from __future__ import annotations

import gc
import multiprocessing as mp
import uuid

from sqlalchemy.engine.default import DefaultDialect

from store import AppDatabase
from store._engines import MAX_SHARED_ENGINES
from store.models import Tenant

OPENS = 30


def _live_dialects() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, DefaultDialect))


def _open_and_flush(url: str) -> None:
    """What one step does with the app database: open it, write a row through the ORM, dispose it."""
    db = AppDatabase.from_url(url)
    try:
        with db.session() as s, s.begin():
            s.add(Tenant(id=uuid.uuid4().hex, name="T"))
    finally:
        db.dispose()


def test_opening_the_database_per_step_leaves_no_engine_behind(db_url: str) -> None:
    """SQLAlchemy's ORM caches each flush statement per mapper and dialect for the life of the process: an
    engine (and its dialect) made per open used to stay alive there, one per step, up to that cache's size."""
    AppDatabase.from_url(db_url).migrate()
    _open_and_flush(db_url)
    dialects, cached = _live_dialects(), len(Tenant.__mapper__._compiled_cache)
    for _ in range(OPENS):
        _open_and_flush(db_url)
    # Not one more dialect alive. Fewer can be: engines earlier tests of this worker left in the shared-engine
    # registry or the ORM's compiled cache may be evicted meanwhile (CI saw 263 against 267).
    assert _live_dialects() <= dialects
    assert len(Tenant.__mapper__._compiled_cache) == cached


def test_one_engine_per_url_and_still_usable_after_dispose(db_url: str) -> None:
    first, second = AppDatabase.from_url(db_url), AppDatabase.from_url(db_url)
    assert first.engine is second.engine
    first.migrate()
    first.dispose()  # closes pooled connections; the shared engine opens new ones when asked
    with second.session() as s:
        assert s.query(Tenant).count() == 0
    second.dispose()


def test_the_engines_kept_are_bounded(tmp_path: object) -> None:
    urls = [f"sqlite:///{tmp_path}/db{n}.db" for n in range(MAX_SHARED_ENGINES + 5)]
    engines = [AppDatabase.from_url(url).engine for url in urls]
    assert AppDatabase.from_url(urls[-1]).engine is engines[-1]  # recent ones are shared
    assert AppDatabase.from_url(urls[0]).engine is not engines[0]  # the oldest were forgotten


def _child_pool_id(url: str, queue: mp.Queue[int]) -> None:
    queue.put(id(AppDatabase.from_url(url).engine.pool))


def test_a_forked_child_gets_its_own_pool(db_url: str) -> None:
    """A parent's pooled connections must never be shared with a forked child (two processes, one socket): the
    child may keep the engine, never its pool (``tests/store/test_engine_fork.py`` checks the connections)."""
    parent = AppDatabase.from_url(db_url).engine.pool
    ctx = mp.get_context("fork")
    queue: mp.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_child_pool_id, args=(db_url, queue))
    child.start()
    child_id = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert child_id != id(parent)  # memory is copied by fork: the same id would be the parent's pool
