"""One SQLAlchemy engine per app database URL in a process (issue 14: flat memory over thousands of syncs).

Every engine brings its own dialect, and SQLAlchemy's ORM keeps the INSERT/UPDATE statements it compiles for a
flush in a cache per mapper (an LRU of 100 entries, for the life of the process) keyed by that dialect. An engine
built for each Dagster step or sensor tick and disposed after therefore stayed alive there, with its statements
and type memos: a long-lived syncing process kept one more engine per run. ``AppDatabase.dispose`` still closes
the shared engine's pooled connections (SQLAlchemy opens a fresh pool on next use), so nothing idles open.
A forked child never reuses its parent's engines: their pools hold the parent's sockets.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine

__all__ = ["MAX_SHARED_ENGINES", "shared_engine"]

# Distinct app database URLs one process keeps an engine for (production uses one; a test session many, one or
# two at a time). A forgotten engine's pooled connections are closed, so idle connections stay few.
MAX_SHARED_ENGINES = 4
_ENGINES: OrderedDict[tuple[str, bool], Engine] = OrderedDict()
_LOCK = threading.Lock()
_owner_pid = os.getpid()


def shared_engine(url: str, echo: bool, build: Callable[[], Engine]) -> Engine:
    """The process's engine for ``url`` (built by ``build`` the first time); the least recently used of more than
    ``MAX_SHARED_ENGINES`` URLs is forgotten and its idle connections closed (its holders may still use it)."""
    global _owner_pid
    key = (url, echo)
    with _LOCK:
        if os.getpid() != _owner_pid:  # forked: the parent's pooled connections are not ours to use or close
            for engine in _ENGINES.values():
                engine.dispose(close=False)
            _ENGINES.clear()
            _owner_pid = os.getpid()
        found = _ENGINES.get(key)
        if found is None:
            found = _ENGINES[key] = build()
            while len(_ENGINES) > MAX_SHARED_ENGINES:
                _ENGINES.popitem(last=False)[1].dispose()
        _ENGINES.move_to_end(key)
        return found
