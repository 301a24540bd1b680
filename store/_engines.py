"""One SQLAlchemy engine per app database URL in a process (issue 14: flat memory over thousands of syncs), and
no engine's pooled connection ever used or closed by a process forked after it was opened.

Every engine brings its own dialect, and SQLAlchemy's ORM keeps the INSERT/UPDATE statements it compiles for a
flush in a cache per mapper (an LRU of 100 entries, for the life of the process) keyed by that dialect. An engine
built for each Dagster step or sensor tick and disposed after therefore stayed alive there, with its statements
and type memos: a long-lived syncing process kept one more engine per run. ``AppDatabase.dispose`` still closes
the shared engine's pooled connections (SQLAlchemy opens a fresh pool on next use), so nothing idles open.

**Fork** (``os.fork``, ``multiprocessing``'s fork or forkserver start; ehrsync itself forks none: Dagster starts
run workers and multiprocess steps as new interpreters, and ehrsync's jobs run their steps in process): a child
inherits every engine's pool, and with it the parent's sockets and SQLite handles; two processes on one PostgreSQL
socket corrupt the protocol state of both, and SQLite forbids a connection's use (or close) after a fork. So in the
child every engine this module built, also one no longer shared but still held by an ``AppDatabase``, gets a new
empty pool (SQLAlchemy's ``dispose(close=False)``); the parent's pools stay referenced there, so no finalizer
closes their connections. A fork from C code runs no at-fork hook: the next lookup here does the same, and the
SQLite pool also refuses, at checkout, a connection another process opened (``store._sqlite_pool``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

__all__ = ["MAX_SHARED_ENGINES", "set_aside_inherited", "shared_engine"]

# Distinct app database URLs one process keeps an engine for (production uses one; a test session many, one or
# two at a time). A forgotten engine's pooled connections are closed, so idle connections stay few.
MAX_SHARED_ENGINES = 4
_ENGINES: OrderedDict[tuple[str, bool], Engine] = OrderedDict()
_BUILT: weakref.WeakSet[Engine] = weakref.WeakSet()  # every engine built here that is still alive
_INHERITED: list[Any] = []  # a forked child's copies of its parent's pools and connections: never used or closed
_LOCK = threading.Lock()
_owner_pid = os.getpid()


def shared_engine(url: str, echo: bool, build: Callable[[], Engine]) -> Engine:
    """The process's engine for ``url`` (built by ``build`` the first time); the least recently used of more than
    ``MAX_SHARED_ENGINES`` URLs is forgotten and its idle connections closed (its holders may still use it)."""
    key = (url, echo)
    with _LOCK:
        if os.getpid() != _owner_pid:  # forked by C code: no at-fork hook ran
            _forget_parents_pools()
        found = _ENGINES.get(key)
        if found is None:
            found = _ENGINES[key] = build()
            _BUILT.add(found)
            while len(_ENGINES) > MAX_SHARED_ENGINES:
                _ENGINES.popitem(last=False)[1].dispose()
        _ENGINES.move_to_end(key)
        return found


def set_aside_inherited(parents: Any) -> None:
    """Keep a forked child's copy of a parent's pool or driver connection referenced for the child's life, so that
    no finalizer closes it here (closing would end the parent's PostgreSQL session or break its SQLite handle)."""
    _INHERITED.append(parents)


def _forget_parents_pools() -> None:
    """In a forked child: a new empty pool for every engine; the parent's pools are set aside, never closed."""
    global _owner_pid
    for engine in list(_BUILT):
        set_aside_inherited(engine.pool)
        engine.dispose(close=False)
    _owner_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a parent's thread may have held it at the fork; no thread here would release it
    _forget_parents_pools()


os.register_at_fork(after_in_child=_after_fork_in_child)
