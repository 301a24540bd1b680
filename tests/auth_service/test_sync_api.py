"""The sync API (issue 5), REST syncs, against real components: the sandbox EHR, the auth service over a socket and
``dagster dev`` (webserver + daemon) on a free port, sharing one state folder (``stack``, one per module:
tests/auth_service/sync_stack.py). Bulk syncs: test_sync_api_bulk.py; the GraphQL client's error mapping:
test_sync_api_client.py.

Conformance: SAL-07 (a patient connects by standalone launch before syncing), BDX-23/BDX-24 (synced
resources land in the warehouse keyed by connection).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from auth_service.services.dagster_client import DagsterGraphQLClient
from engine.models import SyncRun
from store.models import Connection, Tenant
from tests.auth_service.sync_stack import (
    BULK_STATUS,
    SYNC,
    Stack,
    add_connection,
    closed_row,
    dagster_run,
    dagster_run_tags,
    free_port,
    poll,
    sync,
    sync_run,
    warehouse_count,
    warehouse_rows,
)


def test_sync_end_to_end_full_then_history_bdx23_bdx24(stack: Stack, patient_connection: str) -> None:
    """POST starts a Dagster run keyed by its run id; the pipelines reuse the queued row; counts and rows land."""
    r = stack.api("POST", SYNC, json={"connectionId": patient_connection, "mode": "full"})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["status"] == "queued" and started["syncId"] == started["dagsterRunId"]
    assert started["job"] == "full_resync"
    with stack.service.ctx.db.session() as session:
        row = session.get(SyncRun, started["syncId"])
        assert row is not None and row.kind == "full" and row.tenant_id == "t1"

    # the run carries the tags every ehrsync run carries, as the sensors' and ``ehrsync sync``'s do (engine/run_tags.py)
    tags = dagster_run_tags(stack, started["dagsterRunId"])
    with stack.service.ctx.db.session() as session:
        tenant = session.get(Tenant, "t1")
        provider = session.get(Connection, patient_connection)
        assert tenant is not None and provider is not None
        expected = {"name": tenant.name, "source": provider.provider_id}
    assert tags["dagster/partition"] == tags["ehrsync/connection"] == patient_connection
    assert tags["ehrsync/tenant"] == "t1" and tags["ehrsync/tenant_name"] == expected["name"]
    assert tags["ehrsync/source"] == expected["source"] and tags["ehrsync/kind"] == "patient"
    assert tags["ehrsync/trigger"] == "api"

    again = stack.api("POST", SYNC, json={"connectionId": patient_connection})
    assert again.status_code == 409 and again.json()["error"] == "sync_in_progress", again.text
    assert again.json()["syncId"] == started["syncId"]

    final = poll(stack, SYNC, started["syncId"], lambda b: b["status"] in ("completed", "failed"))
    assert final["status"] == "completed", final
    assert final["counts"]["Patient"]["fetched"] >= 1, final["counts"]
    assert final["counts"]["Observation"]["fetched"] >= 1, final["counts"]
    assert final["bytes"] > 0
    with stack.service.ctx.db.session() as session:
        row = session.get(SyncRun, started["syncId"])
        assert row is not None and row.started_at is not None  # ensure_run reused our row and marked it running
        assert session.query(SyncRun).filter_by(connection_id=patient_connection).count() == 1

    landed = dict(
        warehouse_rows(
            stack,
            "SELECT resource_type, count(*) FROM fhir_resources WHERE connection_id = ? GROUP BY 1",
            [patient_connection],
        )
    )
    assert landed.get("Patient") == 1 and landed.get("Observation", 0) >= 1, landed

    history = stack.api("GET", SYNC, params={"connectionId": patient_connection, "limit": 5})
    assert history.status_code == 200
    assert [h["syncId"] for h in history.json()] == [started["syncId"]]
    assert history.json()[0]["status"] == "completed"

    bulk = stack.api("GET", BULK_STATUS, params={"syncId": started["syncId"]})
    assert bulk.status_code == 200 and bulk.json()["bulk"] is None  # a REST sync has no bulk job


def test_full_mode_refetches_everything_and_times_are_the_runs_own(stack: Stack, patient_connection: str) -> None:
    """Issue 10: ``mode: "full"`` runs ``full_resync`` with its run config (every landing op ``full: true``).

    Before, the GraphQL launch carried no run config, so a full resync after a first sync fetched only what
    changed since the marks, like an incremental one. The run's finish time and duration are Dagster's run
    record's, not the moment the status sensor closed the row.
    """
    first = sync(stack, patient_connection, "incremental")  # every type gets its high-water mark
    assert first["status"] == "completed", first
    again = sync(stack, patient_connection, "incremental")
    assert again["status"] == "completed", again
    observations = warehouse_count(stack, patient_connection, "Observation")
    assert observations > 0 and again["counts"]["Observation"]["fetched"] < observations, again["counts"]

    full = sync(stack, patient_connection, "full")
    assert full["status"] == "completed" and full["job"] == "full_resync", full
    assert full["counts"]["Observation"]["fetched"] == observations, full["counts"]
    assert full["counts"]["Patient"]["fetched"] == 1

    # the times on the first run's row: its run-status sensor tick (every 30 s) has most likely come while the
    # other two ran, where the full run's row would make the test wait for the next tick
    row = closed_row(stack, first["syncId"])
    record = dagster_run(stack, first["syncId"])
    assert record["status"] == "SUCCESS" and record["endTime"] is not None
    ended = datetime.fromtimestamp(record["endTime"], UTC)
    began = datetime.fromtimestamp(record["startTime"], UTC)
    assert row.finished_at is not None and row.duration_s is not None
    finished = row.finished_at if row.finished_at.tzinfo else row.finished_at.replace(tzinfo=UTC)
    assert abs(finished - ended) < timedelta(milliseconds=1), (finished, ended)
    assert abs(row.duration_s - (record["endTime"] - record["startTime"])) < 0.001
    shown = stack.api("GET", SYNC, params={"syncId": first["syncId"]}).json()
    assert datetime.fromisoformat(shown["finishedAt"]) == finished
    assert abs(datetime.fromisoformat(shown["startedAt"]) - began) < timedelta(milliseconds=1)


def test_other_tenant_sees_nothing(stack: Stack, patient_connection: str) -> None:
    """A key sees only its tenant: another tenant's connection and runs answer 404."""
    r = stack.api("POST", SYNC, key=stack.other_key, json={"connectionId": patient_connection})
    assert r.status_code == 404 and r.json()["error"] == "not_connected"
    r = stack.api("GET", SYNC, key=stack.other_key, params={"connectionId": patient_connection})
    assert r.status_code == 404
    history = stack.api("GET", SYNC, params={"connectionId": patient_connection}).json()
    if history:
        r = stack.api("GET", SYNC, key=stack.other_key, params={"syncId": history[0]["syncId"]})
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = stack.api("GET", SYNC, params={"syncId": "no-such-run"})
    assert r.status_code == 404
    r = stack.api("POST", SYNC, json={"connectionId": "no-such-connection"})
    assert r.status_code == 404


@pytest.mark.parametrize("status", ["needs_reauth", "disabled", "disconnected"])
def test_inactive_connection_is_refused(stack: Stack, status: str) -> None:
    conn_id = add_connection(stack, "t1", status=status)
    r = stack.api("POST", SYNC, json={"connectionId": conn_id})
    assert r.status_code == 409 and r.json()["error"] == "connection_inactive", r.text
    assert status in r.json()["message"]


def test_bad_requests_name_the_problem(stack: Stack) -> None:
    assert stack.api("GET", SYNC).json()["error"] == "invalid_request"
    both = stack.api("GET", SYNC, params={"syncId": "a", "connectionId": "b"})
    assert both.status_code == 400
    bad = stack.api("POST", SYNC, json={"connectionId": "c1", "mode": "sometimes"})
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"].endswith("mode")
    assert stack.api("POST", SYNC, json={"connectionId": "c1"}, key="wrong").status_code == 401


def test_dagster_down_answers_503(stack: Stack, patient_connection: str) -> None:
    """Dagster unreachable: 503 ``orchestrator_unavailable`` on start, stored status (flagged) on read."""
    app_client: DagsterGraphQLClient = stack.service.server.app.state.dagster
    real_url = app_client.url
    app_client.url = f"http://127.0.0.1:{free_port()}/graphql"  # nothing listens there
    try:
        r = stack.api("POST", SYNC, json={"connectionId": patient_connection})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "orchestrator_unavailable" and "Traceback" not in r.text
        open_id = uuid.uuid4().hex
        with stack.service.ctx.db.session() as session, session.begin():
            session.add(sync_run(open_id, patient_connection, kind="incremental", status="running"))
        body = stack.api("GET", SYNC, params={"syncId": open_id}).json()
        assert body["status"] == "running" and body["orchestrator"] == "unavailable"
    finally:
        app_client.url = real_url
    with stack.service.ctx.db.session() as session, session.begin():
        session.delete(session.get(SyncRun, open_id))
