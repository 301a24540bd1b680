"""Provider admin writes read the tenant's ``enabledProviders`` and write it back: they must hold the write lock
from that read. Otherwise, on SQLite, a writer committing in between (a sync run, a token refresh) fails the
request at once with "database is locked" (a 500), and on PostgreSQL two admins lose one another's change."""

from __future__ import annotations

from tests.auth_service.practice import SMART
from tests.store.concurrent_writer import writer_after_read


def _reads_tenant(statement: str) -> bool:
    sql = statement.lstrip().upper()
    return sql.startswith("SELECT") and "FROM TENANTS" in sql and "PROVIDER_CONFIGS" not in sql


def test_enable_provider_survives_a_concurrent_writer(make_app) -> None:
    h = make_app()
    key = h.bootstrap("t1", SMART)
    headers = {"Authorization": f"Bearer {key}"}
    put = h.client.put("/api/integrations/admin/providers/smart", headers=headers, json={"client_id": "app"})
    assert put.status_code == 200, put.text
    # Right after the request reads the tenant row for its enabledProviders, another process commits.
    with writer_after_read(h.app.state.ctx.db, "t1", _reads_tenant) as writer:
        r = h.client.post("/api/integrations/admin/providers/smart/enable", headers=headers)
    assert writer.threads, "the request never read the tenant row"
    assert r.status_code == 200, r.text
    assert r.json()["enabled"]
    assert writer.errors == []
