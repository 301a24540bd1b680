"""Admin API purge and data retention: ``POST /api/integrations/admin/connections/{id}/purge`` over data synced from
the sandbox (the engine's purge, tenant-scoped, audited with counts), and ``GET``/``PUT .../admin/retention``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import SandboxConfig, SandboxServer
from store.models import Connection
from tests.engine.helpers import SyncWorld, connect_patient, make_environment
from tests.engine.job_runs import run_sync
from tests.running_sync import sync_holding_the_lock

API = "/api/integrations/admin"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def ehr() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as server:
        yield server


@pytest.fixture
def app_t1(tmp_path: Path, make_app: Callable[..., Any]) -> tuple[Any, str]:
    """The auth service over a state folder (app database, DuckDB warehouse), with tenant ``t1`` and its key."""
    state = tmp_path / "state"
    h = make_app(EHRSYNC_STATE_DIR=str(state), DATABASE_URL=f"sqlite:///{state / 'app.db'}")
    return h, h.bootstrap("t1")


@pytest.fixture
def synced(app_t1: tuple[Any, str], tmp_path: Path, ehr: SandboxServer) -> Iterator[tuple[Any, str, str, SyncWorld]]:
    """Tenant ``t1`` has a connection synced from the sandbox into that state folder."""
    h, key = app_t1
    with httpx.Client(timeout=30.0) as http:
        world = make_environment(tmp_path / "state", http=http, tenant_id="t1")
        cid = connect_patient(world, ehr, http=http)
        assert run_sync(world, cid, types=["Patient", "Observation", "DocumentReference"]).status == "completed"
        yield h, key, cid, world
        world.env.db.dispose()


def test_purge_refuses_an_active_connection_then_disconnects_and_purges_on_request(synced) -> None:
    h, key, cid, world = synced
    url = f"{API}/connections/{cid}/purge"
    refused = h.client.post(url, headers=auth(key))
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "connection_not_disconnected",
        "message": refused.json()["message"],
        "connectionStatus": "active",
    }
    with world.env.warehouse() as wh:
        stored = wh.key_counts(cid).rows
    assert stored > 0

    done = h.client.post(url, headers=auth(key), json={"disconnect": True})

    assert done.status_code == 200, done.text
    body = done.json()
    assert body["connection_id"] == cid and body["status"] == "disconnected" and body["purged_at"]
    assert body["warehouse_tables"]["fhir_resources"] == stored and body["counts"]["landing_files"] > 0
    with world.env.warehouse() as wh:
        assert wh.key_counts(cid).rows == 0
    with world.env.db.session() as s:
        conn = s.get(Connection, cid)
        assert conn is not None and conn.status == "disconnected" and conn.data_purged_at is not None
    events = h.client.get(f"{API}/audit", headers=auth(key), params={"connection_id": cid}).json()
    purge_event = next(e for e in events if e["action"] == "connection.purge")
    assert purge_event["outcome"] == "success" and purge_event["actor"] == "api_key:t1"
    assert purge_event["detail"]["warehouse_rows"] == sum(body["warehouse_tables"].values())
    assert {"connection.disconnect", "connection.purge"} <= {e["action"] for e in events}

    again = h.client.post(url, headers=auth(key))
    assert again.status_code == 200 and set(again.json()["counts"].values()) == {0}


def test_a_purge_that_fails_after_disconnecting_says_the_connection_was_disconnected(
    tmp_path: Path, make_app: Callable[..., Any], ehr: SandboxServer
) -> None:
    """``disconnect: true`` disconnects (tokens deleted, the revocation made or not), then a running sync holds the
    connection past the purge's wait (``connection_busy``): the error answer says the connection was disconnected,
    what became of its tokens (the fields of the disconnect's answer), and that a plain purge now finishes it."""
    state = tmp_path / "state"
    h = make_app(
        EHRSYNC_STATE_DIR=str(state),
        DATABASE_URL=f"sqlite:///{state / 'app.db'}",
        EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS="1",
    )
    key = h.bootstrap("t1")
    url = f"{API}/connections/{{}}/purge"
    with httpx.Client(timeout=30.0) as http:
        world = make_environment(state, http=http, tenant_id="t1")
        try:
            cid = connect_patient(world, ehr, http=http)
            assert run_sync(world, cid, types=["Patient"]).status == "completed"
            with sync_holding_the_lock(world.env.zone.root, cid):
                busy = h.client.post(url.format(cid), headers=auth(key), json={"disconnect": True})
            assert busy.status_code == 409 and busy.json()["error"] == "connection_busy", busy.text
            body = busy.json()
            events = h.client.get(f"{API}/audit", headers=auth(key), params={"connection_id": cid}).json()
            [disconnect] = [e for e in events if e["action"] == "connection.disconnect"]
            assert body["disconnected"] is True
            assert (body["revoked_at_server"], body["revocation"]) == (
                disconnect["detail"]["revoked_at_server"],
                disconnect["detail"]["revocation"],
            )
            assert body.get("revocation_error") == disconnect["detail"].get("error_code")
            assert "warning" in body or body["revoked_at_server"]
            message = body["message"]
            assert "a sync of this connection is still running" in message
            assert "The connection was disconnected first and stays disconnected" in message
            assert "purge it again, disconnect is no longer needed" in message
            if not body["revoked_at_server"]:
                assert body["warning"] in message
            with world.env.db.session() as s:
                conn = s.get(Connection, cid)
                assert conn is not None and conn.status == "disconnected" and conn.data_purged_at is None

            again = h.client.post(url.format(cid), headers=auth(key))  # as told: no disconnect this time
            assert again.status_code == 200 and again.json()["status"] == "disconnected", again.text
        finally:
            world.env.db.dispose()


def test_purge_is_tenant_scoped_and_names_unknown_ids(synced) -> None:
    h, _key, cid, world = synced
    other = h.bootstrap("t2")
    stranger = h.client.post(f"{API}/connections/{cid}/purge", headers=auth(other), json={"disconnect": True})
    assert stranger.status_code == 404 and stranger.json()["error"] == "not_connected"
    unknown = h.client.post(f"{API}/connections/no-such-id/purge", headers=auth(other))
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_connected"
    assert h.client.post(f"{API}/connections/{cid}/purge").status_code == 401
    with world.env.warehouse() as wh:
        assert wh.key_counts(cid).rows > 0


def test_retention_period_is_set_read_and_audited(app_t1) -> None:
    h, key = app_t1
    unset = h.client.get(f"{API}/retention", headers=auth(key))
    assert unset.json() == {"tenant_id": "t1", "data_retention_days": None}
    put = h.client.put(f"{API}/retention", headers=auth(key), json={"data_retention_days": 30})
    assert put.status_code == 200 and put.json()["data_retention_days"] == 30
    assert h.client.get(f"{API}/retention", headers=auth(key)).json()["data_retention_days"] == 30
    bad = h.client.put(f"{API}/retention", headers=auth(key), json={"data_retention_days": -1})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    cleared = h.client.put(f"{API}/retention", headers=auth(key), json={"data_retention_days": None})
    assert cleared.status_code == 200 and cleared.json()["data_retention_days"] is None
    events = [e for e in h.client.get(f"{API}/audit", headers=auth(key)).json() if e["action"] == "tenant.retention"]
    assert [e["detail"] for e in events] == [{"days": None, "previous": 30}, {"days": 30, "previous": None}]


@pytest.mark.parametrize("days", [True, "30", 30.0], ids=["true", "text", "float"])
def test_retention_period_must_be_a_json_whole_number(app_t1, days: Any) -> None:
    """``true`` was read as 1 day (a client taking the field for an on/off switch had every disconnected
    connection's data purged a day later), ``"30"`` and ``30.0`` as 30: each is now refused, the period unchanged."""
    h, key = app_t1
    bad = h.client.put(f"{API}/retention", headers=auth(key), json={"data_retention_days": days})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    assert bad.json()["fields"][0]["field"] == "body.data_retention_days"
    assert h.client.get(f"{API}/retention", headers=auth(key)).json()["data_retention_days"] is None


@pytest.mark.parametrize("disconnect", ["yes", 1, "false"], ids=["yes", "one", "text-false"])
def test_purge_disconnect_must_be_a_json_boolean(synced, disconnect: Any) -> None:
    """``"yes"`` or ``1`` disconnected and purged an active connection (``"false"`` was read as false): a
    destructive switch takes only JSON ``true``/``false``, as a note's ``confirmNotInEhr`` does."""
    h, key, cid, world = synced
    bad = h.client.post(f"{API}/connections/{cid}/purge", headers=auth(key), json={"disconnect": disconnect})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    assert bad.json()["fields"][0]["field"] == "body.disconnect"
    with world.env.db.session() as s:
        assert s.get(Connection, cid).status == "active"
    with world.env.warehouse() as wh:
        assert wh.key_counts(cid).rows > 0
