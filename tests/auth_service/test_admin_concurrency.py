"""Provider admin writes read the tenant's ``enabledProviders`` and write it back: they must hold the write lock
from that read. Otherwise, on SQLite, a writer committing in between (a sync run, a token refresh) fails the
request at once with "database is locked" (a 500), and on PostgreSQL two admins lose one another's change."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event

from store import AppDatabase
from store.models import Tenant
from tests.auth_service.practice import SMART


def test_enable_provider_survives_a_concurrent_writer(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    headers = {"Authorization": f"Bearer {key}"}
    put = h.client.put("/api/integrations/admin/providers/smart", headers=headers, json={"client_id": "app"})
    assert put.status_code == 200, put.text
    db = h.app.state.ctx.db
    other = AppDatabase.from_url(db.engine.url.render_as_string(hide_password=False))
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    done = threading.Event()

    def concurrent_write() -> None:
        try:
            with other.locked_session() as session:
                tenant = session.get(Tenant, "t1")
                assert tenant is not None
                tenant.name = "renamed by another process"
        except BaseException as exc:  # the other writer must succeed too
            errors.append(exc)
        finally:
            done.set()

    def after_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Right after the request reads the tenant row for its enabledProviders, another process commits.
        sql = statement.lstrip().upper()
        if not threads and sql.startswith("SELECT") and "FROM TENANTS" in sql and "PROVIDER_CONFIGS" not in sql:
            thread = threading.Thread(target=concurrent_write)
            threads.append(thread)
            thread.start()
            done.wait(timeout=1.0)  # with the lock held the writer waits for our commit instead

    event.listen(db.engine, "after_cursor_execute", after_execute)
    try:
        r = h.client.post("/api/integrations/admin/providers/smart/enable", headers=headers)
    finally:
        event.remove(db.engine, "after_cursor_execute", after_execute)
        for thread in threads:
            thread.join(timeout=60)
        other.dispose()
    assert threads, "the request never read the tenant row"
    assert r.status_code == 200, r.text
    assert r.json()["enabled"]
    assert errors == []
