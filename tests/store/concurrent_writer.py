"""Another process commits while a read-modify-write is between its read and its write.

Used by tests that prove a read-modify-write of the app database holds the write lock from its read: on
SQLite a writer committing in between would fail it at once with "database is locked", on PostgreSQL one of
the two changes would be lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from store import AppDatabase
from store.models import Tenant


@dataclass
class ConcurrentWriter:
    """What happened: the writer threads started (at most one) and the errors the writer met."""

    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


@contextmanager
def writer_after_read(db: AppDatabase, tenant_id: str, is_read: Callable[[str], bool]) -> Iterator[ConcurrentWriter]:
    """While inside: right after the first statement on ``db`` that ``is_read`` matches, a second engine (another
    process, as far as the database can tell) renames the tenant under its own write lock. The statement's
    thread waits up to a second for that commit: holding the lock, it makes the writer wait for it instead."""
    other = AppDatabase.from_url(db.engine.url.render_as_string(hide_password=False))
    writer = ConcurrentWriter()
    done = threading.Event()

    def concurrent_write() -> None:
        try:
            with other.locked_session() as session:
                tenant = session.get(Tenant, tenant_id)
                assert tenant is not None
                tenant.name = "renamed by another process"
        except BaseException as exc:  # the other writer must succeed too
            writer.errors.append(exc)
        finally:
            done.set()

    def after_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not writer.threads and is_read(statement):
            thread = threading.Thread(target=concurrent_write)
            writer.threads.append(thread)
            thread.start()
            done.wait(timeout=1.0)

    event.listen(db.engine, "after_cursor_execute", after_execute)
    try:
        yield writer
    finally:
        event.remove(db.engine, "after_cursor_execute", after_execute)
        for thread in writer.threads:
            thread.join(timeout=60)
        other.dispose()
