"""The sync API (issue 5) against real components: the sandbox EHR, the auth service over a socket and
``dagster dev`` (webserver + daemon) on a free port, sharing one state folder; plus unit cases of the
GraphQL client's error mapping over ``httpx.MockTransport``.

Conformance: SAL-07 (a patient connects by standalone launch before syncing), BDX-23/BDX-24 (synced
resources land in the warehouse keyed by connection), BDX-08 (bulk jobs reported from ``bulk_jobs``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.core.config import Settings, load_settings
from auth_service.services.dagster_client import (
    DagsterGraphQLClient,
    JobSelector,
    OrchestratorRejectedError,
    OrchestratorUnavailableError,
)
from auth_service.services.tenants import bootstrap_tenant
from auth_service.tenants.settings import TenantSeed
from connectors.errors import ConfigurationError
from connectors.smart import discover
from engine.models import BulkJob, BulkJobFile, SyncRun, utcnow
from store import save_provider_config
from store.models import Connection, Tenant
from tests.auth_service.ehr import Service, authorize_headless, patient_ids, running_service, sandbox_admin
from tests.auth_service.keyutil import enc_key, rsa_pem
from warehouse._filelock import file_lock

SYNC = "/api/ehr/sync"
BULK_START = "/api/integrations/ehr/bulk/start"
BULK_STATUS = "/api/integrations/ehr/bulk/status"
WHERE = JobSelector("pipelines.definitions", "__repository__", "incremental_sync")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GraphQL call to the test's ``dagster dev``. A 5xx is retried a few times: on a loaded CI machine its
    webserver once answered 500 to ``stopSensor`` while the daemon wrote the same SQLite storage, without a log
    line (a transient lock on the instance's SQLite files, not an answer about ehrsync)."""
    for attempt in range(5):
        r = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=60)
        if r.status_code < 500 or attempt == 4:
            break
        time.sleep(1 + attempt)
    if r.is_error:
        raise AssertionError(f"dagster GraphQL answered HTTP {r.status_code}: {r.text[:500]}")
    body: dict[str, Any] = r.json()
    return body


@dataclass
class DagsterDev:
    proc: subprocess.Popen[bytes]
    graphql_url: str
    log: Path

    def stop(self) -> None:
        """SIGINT to the whole group (webserver, daemon, code server), SIGKILL if it does not stop."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(self.proc.pid, signal.SIGKILL)


def _start_dagster(env: dict[str, str], state: Path) -> DagsterDev:
    from ehrsync.dagster_instance import ui_command
    from engine.settings import PipelineSettings

    port = _free_port()
    argv, full_env = ui_command(PipelineSettings.from_env(env), port=port)
    full_env.update(env)
    log = state / "dagster-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    dev = DagsterDev(proc, f"http://127.0.0.1:{port}/graphql", log)
    query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name jobs { name } } } } }"
    deadline = time.monotonic() + 180  # as tests/ehrsync/test_ui.py: a busy CI machine starts it slowly
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            dev.stop()
            raise RuntimeError(f"dagster dev did not load the code location:\n{log.read_text()[-3000:]}")
        try:
            nodes = _graphql(dev.graphql_url, query)["data"]["repositoriesOrError"].get("nodes") or []
            if any(j["name"] == "incremental_sync" for n in nodes for j in n["jobs"]):
                break
        except (httpx.HTTPError, AssertionError, ValueError, KeyError, TypeError):  # not up yet
            pass
        time.sleep(0.5)
    _stop_sensors(dev.graphql_url, nodes[0]["name"], ("connections_sensor", "scheduled_syncs"))
    return dev


def _stop_sensors(url: str, repository: str, names: tuple[str, ...]) -> None:
    """Only the API launches runs here: the first-sync and schedule sensors would race the tests."""
    for name in names:
        selector = {"repositoryLocationName": "pipelines.definitions", "repositoryName": repository, "sensorName": name}
        found = _graphql(
            url,
            "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { id } } }",
            {"s": selector},
        )
        sensor_id = found["data"]["sensorOrError"]["id"]
        stopped = _graphql(url, "mutation($id: String) { stopSensor(id: $id) { __typename } }", {"id": sensor_id})
        assert stopped["data"]["stopSensor"]["__typename"] == "StopSensorMutationResult", stopped


@dataclass
class Stack:
    service: Service
    dagster: DagsterDev
    state: Path
    other_key: str  # an API key of tenant t2
    fhir_base: str  # the sandbox's: runs of hand-made connections fail fast there (no DNS waits)

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.service.api_key}"}
        return httpx.request(method, self.service.base_url + path, headers=headers, timeout=30, **kwargs)


def _add_connection(stack: Stack, tenant_id: str, *, kind: str = "patient", status: str = "active") -> str:
    """A connection row without tokens (its runs fail at the EHR; the API checks come first). A patient connection
    has its patient: one without is refused ``no_patient`` whatever its status (``test_patientless_connections``)."""
    with stack.service.ctx.db.session() as session, session.begin():
        conn = Connection(
            tenant_id=tenant_id,
            provider_id="smart",
            kind=kind,
            fhir_base=stack.fhir_base,
            client_id="app",
            status=status,
            group_id="g1" if kind == "group" else None,
            patient_id="pat0" if kind == "patient" else None,
        )
        session.add(conn)
        session.flush()
        return conn.id


@pytest.fixture(scope="module")
def stack(sandbox_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("sync_api")
    env = {
        "EHRSYNC_STATE_DIR": str(state),
        "DATABASE_URL": f"sqlite:///{state / 'app.db'}",
        "WAREHOUSE_URL": str(state / "warehouse.duckdb"),
        "INTEGRATIONS_TOKEN_ENC_KEY": enc_key(),
        "DAGSTER_HOME": str(state / "dagster_home"),
    }
    from ehrsync.dagster_instance import prepare_dagster_home

    prepare_dagster_home(state / "dagster_home")
    pem = rsa_pem()
    port_holder: dict[str, str] = {}

    def settings(**overrides: Any) -> Settings:
        values = {
            "INTEGRATIONS_TOKEN_ENC_KEY": env["INTEGRATIONS_TOKEN_ENC_KEY"],
            "DATABASE_URL": env["DATABASE_URL"],
            "EHR_JWT_PRIVATE_KEY": pem,
            "EHR_JWT_KEY_ID": "kid-1",
            "DAGSTER_GRAPHQL_URL": port_holder["url"],
            **overrides,
        }
        return load_settings(**values)

    practice = {
        "smartFhir": {
            "enabled": True,
            "issuer": sandbox_session.fhir_base,
            "fhirBaseUrl": sandbox_session.fhir_base,
            "clientId": "sync-app",
        },
        "ehrIntegrations": {"enableBulkExport": True},
    }
    # The auth service migrates the app database first; Dagster's sensors read it from the start.
    port_holder["url"] = f"http://127.0.0.1:{_free_port()}/graphql"
    with running_service(settings, sandbox_session, practice) as service:
        dagster = _start_dagster(env, state)
        try:
            service.server.app.state.dagster.url = dagster.graphql_url
            seed = TenantSeed.model_validate({"id": "t2", "name": "Clinic Two"})
            with service.ctx.db.session() as session, session.begin():
                other_key = bootstrap_tenant(session, seed, service.ctx.cipher).api_key
            yield Stack(service, dagster, state, other_key, sandbox_session.fhir_base)
        finally:
            dagster.stop()


@pytest.fixture(scope="module")
def patient_connection(stack: Stack, sandbox_session: Any) -> str:
    """SAL-07: a patient connects through the auth service (standalone launch, pre-approved at the sandbox)."""
    svc = stack.service
    sandbox_admin(
        sandbox_session,
        "clients",
        {"client_id": "sync-app", "client_type": "public", "redirect_uris": [svc.redirect_uri]},
    )
    sandbox_admin(
        sandbox_session, "preapprove", {"client_id": "sync-app", "patient_id": patient_ids(sandbox_session)[0]}
    )
    r = authorize_headless(svc, f"{svc.base_url}/api/integrations/smart/login?tenant=t1&provider=smart")
    assert r.status_code == 303, r.text
    status = svc.admin("GET", "/api/integrations/smart/status").json()
    assert status["status"] == "active"
    return str(status["connection_id"])


def _sync_run(
    run_id: str,
    connection_id: str,
    *,
    kind: str,
    status: str,
    counts: dict[str, Any] | None = None,
    size: int = 0,
    **times: datetime | None,
) -> SyncRun:
    """A run row of tenant t1 as the sync writes it (``created_at`` now unless given in ``times``)."""
    times.setdefault("created_at", utcnow())
    return SyncRun(
        id=run_id,
        connection_id=connection_id,
        tenant_id="t1",
        kind=kind,
        status=status,
        counts=counts or {},
        bytes=size,
        **times,
    )


def _poll(stack: Stack, path: str, sync_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 300  # "not forever": a Dagster run on a busy CI machine may take minutes
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = stack.api("GET", path, params={"syncId": sync_id})
        assert r.status_code == 200, r.text
        body = r.json()
        if done(body):
            return body
        time.sleep(1)
    raise AssertionError(f"sync {sync_id} did not finish: {body}\n{stack.dagster.log.read_text()[-3000:]}")


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
    tags = _dagster_run_tags(stack, started["dagsterRunId"])
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

    final = _poll(stack, SYNC, started["syncId"], lambda b: b["status"] in ("completed", "failed"))
    assert final["status"] == "completed", final
    assert final["counts"]["Patient"]["fetched"] >= 1, final["counts"]
    assert final["counts"]["Observation"]["fetched"] >= 1, final["counts"]
    assert final["bytes"] > 0
    with stack.service.ctx.db.session() as session:
        row = session.get(SyncRun, started["syncId"])
        assert row is not None and row.started_at is not None  # ensure_run reused our row and marked it running
        assert session.query(SyncRun).filter_by(connection_id=patient_connection).count() == 1

    landed = dict(
        _warehouse_rows(
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


def _dagster_run(stack: Stack, run_id: str) -> dict[str, Any]:
    """The run as Dagster's own record has it (status, startTime, endTime in epoch seconds)."""
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status startTime endTime } } }"
    run: dict[str, Any] = _graphql(stack.dagster.graphql_url, query, {"id": run_id})["data"]["runOrError"]
    return run


def _dagster_run_tags(stack: Stack, run_id: str) -> dict[str, str]:
    """The run's tags as Dagster stored them."""
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"
    run = _graphql(stack.dagster.graphql_url, query, {"id": run_id})["data"]["runOrError"]
    return {t["key"]: t["value"] for t in run["tags"]}


def _closed_row(stack: Stack, run_id: str) -> SyncRun:
    """The ``sync_runs`` row once a run-status sensor (or the engine) has closed it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with stack.service.ctx.db.session() as session:
            row: SyncRun | None = session.get(SyncRun, run_id)
            if row is not None and row.status not in ("queued", "running"):
                session.expunge(row)
                return row
        time.sleep(0.5)
    raise AssertionError(f"sync_runs row {run_id} was never closed:\n{stack.dagster.log.read_text()[-3000:]}")


def _sync(stack: Stack, connection_id: str, mode: str, path: str = SYNC) -> dict[str, Any]:
    """Start a sync and follow it to its end; no answer on the way may show an end without its time."""
    body = {"connectionId": connection_id} if path == BULK_START else {"connectionId": connection_id, "mode": mode}
    r = stack.api("POST", path, json=body)
    assert r.status_code == 202, r.text
    seen: list[dict[str, Any]] = []

    def done(b: dict[str, Any]) -> bool:
        seen.append(b)
        return b["status"] in ("completed", "failed")

    final = _poll(stack, BULK_STATUS if path == BULK_START else SYNC, r.json()["syncId"], done)
    ended = [b for b in seen if b["status"] in ("completed", "failed")]
    assert all(b["finishedAt"] and b["durationS"] is not None for b in ended), ended
    return {**final, "job": r.json()["job"]}


def _warehouse_rows(stack: Stack, sql: str, params: list[str]) -> list[tuple[Any, ...]]:
    """Read the stack's warehouse as ehrsync's own readers do: under the shared side of its lock file, so a write
    still going on in another process (a run's asset checks, the next sensor-launched run) is waited for instead of
    failing the read with DuckDB's "Conflicting lock"."""
    path = stack.state / "warehouse.duckdb"
    lock = path.with_name(path.name + ".lock")
    with file_lock(lock, exclusive=False, timeout_s=60), duckdb.connect(str(path), read_only=True) as wh:
        return wh.execute(sql, params).fetchall()


def _warehouse_count(stack: Stack, connection_id: str, resource_type: str) -> int:
    rows = _warehouse_rows(
        stack,
        "SELECT count(*) FROM fhir_resources WHERE connection_id = ? AND resource_type = ?",
        [connection_id, resource_type],
    )
    return int(rows[0][0]) if rows else 0


def test_full_mode_refetches_everything_and_times_are_the_runs_own(stack: Stack, patient_connection: str) -> None:
    """Issue 10: ``mode: "full"`` runs ``full_resync`` with its run config (every landing op ``full: true``).

    Before, the GraphQL launch carried no run config, so a full resync after a first sync fetched only what
    changed since the marks, like an incremental one. The run's finish time and duration are Dagster's run
    record's, not the moment the status sensor closed the row.
    """
    first = _sync(stack, patient_connection, "incremental")  # every type gets its high-water mark
    assert first["status"] == "completed", first
    again = _sync(stack, patient_connection, "incremental")
    assert again["status"] == "completed", again
    observations = _warehouse_count(stack, patient_connection, "Observation")
    assert observations > 0 and again["counts"]["Observation"]["fetched"] < observations, again["counts"]

    full = _sync(stack, patient_connection, "full")
    assert full["status"] == "completed" and full["job"] == "full_resync", full
    assert full["counts"]["Observation"]["fetched"] == observations, full["counts"]
    assert full["counts"]["Patient"]["fetched"] == 1

    row = _closed_row(stack, full["syncId"])
    record = _dagster_run(stack, full["syncId"])
    assert record["status"] == "SUCCESS" and record["endTime"] is not None
    ended = datetime.fromtimestamp(record["endTime"], UTC)
    began = datetime.fromtimestamp(record["startTime"], UTC)
    assert row.finished_at is not None and row.duration_s is not None
    finished = row.finished_at if row.finished_at.tzinfo else row.finished_at.replace(tzinfo=UTC)
    assert abs(finished - ended) < timedelta(milliseconds=1), (finished, ended)
    assert abs(row.duration_s - (record["endTime"] - record["startTime"])) < 0.001
    shown = stack.api("GET", SYNC, params={"syncId": full["syncId"]}).json()
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
    conn_id = _add_connection(stack, "t1", status=status)
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


def test_bulk_start_refuses_patient_connections_and_flag_off(stack: Stack, patient_connection: str) -> None:
    r = stack.api("POST", BULK_START, json={"connectionId": patient_connection})
    assert r.status_code == 409 and r.json()["error"] == "bulk_not_enabled"
    other_group = _add_connection(stack, "t2", kind="group")
    r = stack.api("POST", BULK_START, key=stack.other_key, json={"connectionId": other_group})
    assert r.status_code == 409 and r.json()["error"] == "bulk_not_enabled"
    assert "enableBulkExport" in r.json()["message"]
    r = stack.api("POST", SYNC, key=stack.other_key, json={"connectionId": other_group})
    assert r.status_code == 409 and r.json()["error"] == "bulk_not_enabled", "the sync endpoint must check it too"


def test_bulk_run_that_fails_is_reported_failed_bdx08(stack: Stack) -> None:
    """A group connection with no tokens: the bulk_export run fails in Dagster and the API reports it."""
    group = _add_connection(stack, "t1", kind="group")
    r = stack.api("POST", BULK_START, json={"connectionId": group})
    assert r.status_code == 202, r.text
    assert r.json()["job"] == "bulk_export" and r.json()["kind"] == "bulk"
    final = _poll(stack, BULK_STATUS, r.json()["syncId"], lambda b: b["status"] in ("completed", "failed"))
    assert final["status"] == "failed", final
    assert final["error"]


def test_bulk_status_reports_job_files(stack: Stack) -> None:
    """The bulk job row of a run: status URL presence, transactionTime, files done/total (BDX-08)."""
    group = _add_connection(stack, "t1", kind="group")
    run_id = uuid.uuid4().hex
    with stack.service.ctx.db.session() as session, session.begin():
        session.add(_sync_run(run_id, group, kind="bulk", status="completed", size=10))
        session.add(
            BulkJob(
                id="job-" + run_id[:8],
                connection_id=group,
                run_id=run_id,
                stream="bulk:group:g1",
                type_key="Patient",
                level="group",
                group_id="g1",
                types=["Patient"],
                kickoff_url="https://ehr.example/fhir/Group/g1/$export",
                status_url="https://ehr.example/bulk/status/1",
                status="completed",
                transaction_time=utcnow(),
            )
        )
        session.flush()
        for n, state in enumerate(("done", "done", "failed")):
            session.add(
                BulkJobFile(
                    job_id="job-" + run_id[:8],
                    kind="output",
                    resource_type="Patient",
                    url=f"https://ehr.example/f{n}.ndjson",
                    state=state,
                )
            )
    body = stack.api("GET", BULK_STATUS, params={"syncId": run_id}).json()
    assert body["status"] == "completed" and body["dagsterStatus"] is None
    bulk = body["bulk"]
    assert bulk["statusUrlPresent"] is True and bulk["transactionTime"]
    assert (bulk["filesDone"], bulk["filesFailed"], bulk["filesTotal"]) == (2, 1, 3)
    assert stack.api("GET", BULK_STATUS, key=stack.other_key, params={"syncId": run_id}).status_code == 404


def test_dagster_down_answers_503(stack: Stack, patient_connection: str) -> None:
    """Dagster unreachable: 503 ``orchestrator_unavailable`` on start, stored status (flagged) on read."""
    app_client: DagsterGraphQLClient = stack.service.server.app.state.dagster
    real_url = app_client.url
    app_client.url = f"http://127.0.0.1:{_free_port()}/graphql"  # nothing listens there
    try:
        r = stack.api("POST", SYNC, json={"connectionId": patient_connection})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "orchestrator_unavailable" and "Traceback" not in r.text
        open_id = uuid.uuid4().hex
        with stack.service.ctx.db.session() as session, session.begin():
            session.add(_sync_run(open_id, patient_connection, kind="incremental", status="running"))
        body = stack.api("GET", SYNC, params={"syncId": open_id}).json()
        assert body["status"] == "running" and body["orchestrator"] == "unavailable"
    finally:
        app_client.url = real_url
    with stack.service.ctx.db.session() as session, session.begin():
        session.delete(session.get(SyncRun, open_id))


def test_settings_default_and_validation() -> None:
    base = {"INTEGRATIONS_TOKEN_ENC_KEY": enc_key()}
    assert load_settings(**base).DAGSTER_GRAPHQL_URL == "http://127.0.0.1:3000/graphql"
    with pytest.raises(ConfigurationError, match="DAGSTER_GRAPHQL_URL"):
        load_settings(**base, DAGSTER_GRAPHQL_URL="localhost:3000")


# --- unit cases of the GraphQL client over httpx.MockTransport ---------------------------------------------


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> DagsterGraphQLClient:
    return DagsterGraphQLClient(
        "http://dagster.test/graphql", http=httpx.Client(transport=httpx.MockTransport(handler))
    )


def _answer(field: str, result: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, json={"data": {field: result}})


@pytest.mark.parametrize(
    ("typename", "result", "expected"),
    [
        ("PythonError", {"message": "boom in user code"}, "PythonError: boom in user code"),
        ("InvalidSubsetError", {"message": "no such asset"}, "InvalidSubsetError: no such asset"),
        ("PipelineNotFoundError", {"message": "job gone"}, "PipelineNotFoundError: job gone"),
        (
            "RunConfigValidationInvalid",
            {"errors": [{"message": "missing ops"}, {"message": "bad type"}]},
            "RunConfigValidationInvalid: missing ops; bad type",
        ),
        ("UnauthorizedError", {"message": "read-only"}, "UnauthorizedError: read-only"),
    ],
)
def test_launch_error_results_map_to_rejected(typename: str, result: dict[str, Any], expected: str) -> None:
    client = _client(_answer("launchRun", {"__typename": typename, **result}))
    with pytest.raises(OrchestratorRejectedError) as info:
        client.launch_run(WHERE, {"dagster/partition": "c1"})
    assert info.value.typename == typename and str(info.value) == expected
    assert info.value.code == "orchestrator_rejected"


def test_launch_sends_selector_and_tags() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": "r-1", "status": "QUEUED"}}}
            },
        )

    assert _client(handler).launch_run(WHERE, {"dagster/partition": "c1", "ehrsync/trigger": "api"}) == "r-1"
    params = seen[0]["variables"]["executionParams"]
    assert params["selector"] == {
        "repositoryLocationName": "pipelines.definitions",
        "repositoryName": "__repository__",
        "jobName": "incremental_sync",
    }
    assert {"key": "dagster/partition", "value": "c1"} in params["executionMetadata"]["tags"]
    assert "launchRun" in seen[0]["query"]


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused", request=request)),
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=request)),
        lambda request: httpx.Response(502, text="bad gateway"),
        lambda request: httpx.Response(200, text="<html>proxy login</html>"),
        lambda request: httpx.Response(200, json=["not", "an", "object"]),
    ],
    ids=["refused", "timeout", "http-502", "not-json", "not-object"],
)
def test_unreachable_or_garbage_is_unavailable(handler: Callable[[httpx.Request], httpx.Response]) -> None:
    with pytest.raises(OrchestratorUnavailableError) as info:
        _client(handler).run_status("r-1")
    assert info.value.code == "orchestrator_unavailable"


def test_partition_config_is_asked_by_pipeline_selector_and_launched_as_run_config() -> None:
    """The launch carries the job's own partition config (``full_resync``: ``full: true``), issue 10."""
    seen: list[dict[str, Any]] = []
    yaml = "ops:\n  landing__Patient:\n    config:\n      full: true\n"

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if "pipelineOrError" in body["query"]:
            partition = {"runConfigOrError": {"__typename": "PartitionRunConfig", "yaml": yaml}}
            return httpx.Response(
                200, json={"data": {"pipelineOrError": {"__typename": "Pipeline", "partition": partition}}}
            )
        run = {"runId": "r-1", "status": "QUEUED"}
        return httpx.Response(200, json={"data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": run}}})

    client = _client(handler)
    config = client.partition_run_config(WHERE, "c1")
    assert config == yaml
    assert seen[0]["variables"] == {
        "selector": {
            "repositoryLocationName": "pipelines.definitions",
            "repositoryName": "__repository__",
            "pipelineName": "incremental_sync",
        },
        "partition": "c1",
    }
    assert client.launch_run(WHERE, {"dagster/partition": "c1"}, config) == "r-1"
    assert seen[1]["variables"]["executionParams"]["runConfigData"] == yaml


@pytest.mark.parametrize(
    "result",
    [
        {"__typename": "PipelineNotFoundError", "message": "no job"},
        {"__typename": "Pipeline", "partition": {"runConfigOrError": {"__typename": "PythonError", "message": "bad"}}},
        {"__typename": "Pipeline", "partition": None},
    ],
    ids=["no-job", "config-error", "no-partition"],
)
def test_partition_config_errors_are_rejected(result: dict[str, Any]) -> None:
    with pytest.raises(OrchestratorRejectedError):
        _client(_answer("pipelineOrError", result)).partition_run_config(WHERE, "c1")


def test_run_state_reads_the_runs_own_times() -> None:
    run = {"__typename": "Run", "runId": "r", "status": "SUCCESS", "startTime": 1_790_000_000.5, "endTime": None}
    state = _client(_answer("runOrError", run)).run_state("r")
    assert state is not None and state.status == "SUCCESS" and state.ended_at is None
    assert state.started_at == datetime.fromtimestamp(1_790_000_000.5, UTC)


def test_graphql_top_level_errors_are_rejected() -> None:
    body = {"errors": [{"message": 'Cannot query field "launchRun" on type "Mutation".'}]}
    client = _client(lambda request: httpx.Response(400, json=body))
    with pytest.raises(OrchestratorRejectedError, match="Cannot query field"):
        client.launch_run(WHERE, {})


def test_duplicate_partition_is_success_and_other_errors_raise() -> None:
    dup = _answer("addDynamicPartition", {"__typename": "DuplicateDynamicPartitionError", "message": "exists"})
    assert _client(dup).add_dynamic_partition(WHERE, "connections", "c1") is False
    ok = _answer("addDynamicPartition", {"__typename": "AddDynamicPartitionSuccess", "partitionKey": "c1"})
    assert _client(ok).add_dynamic_partition(WHERE, "connections", "c1") is True
    err = _answer("addDynamicPartition", {"__typename": "PythonError", "message": "storage down"})
    with pytest.raises(OrchestratorRejectedError, match="storage down"):
        _client(err).add_dynamic_partition(WHERE, "connections", "c1")


def test_run_status_and_not_found() -> None:
    assert _client(_answer("runOrError", {"__typename": "Run", "runId": "r", "status": "FAILURE"})).run_status("r") == (
        "FAILURE"
    )
    missing = _answer("runOrError", {"__typename": "RunNotFoundError", "message": "no run"})
    assert _client(missing).run_status("r") is None


def test_find_job_needs_exactly_one_repository() -> None:
    nodes = [{"name": "__repository__", "location": {"name": "loc"}, "jobs": [{"name": "bulk_export"}]}]
    repos = _answer("repositoriesOrError", {"__typename": "RepositoryConnection", "nodes": nodes})
    assert _client(repos).find_job("bulk_export") == JobSelector("loc", "__repository__", "bulk_export")
    with pytest.raises(OrchestratorRejectedError, match="no repositories define job 'incremental_sync'"):
        _client(repos).find_job("incremental_sync")


def test_client_refuses_a_relative_url() -> None:
    with pytest.raises(ValueError, match="not an absolute"):
        DagsterGraphQLClient("/graphql")


# --- reconciliation of open rows with Dagster's run status (app over TestClient, Dagster over MockTransport) --

_T0 = 1_790_000_000.25  # a Dagster run record's startTime (epoch seconds)
_ENDED = {"startTime": _T0, "endTime": _T0 + 42.5}


@pytest.mark.parametrize(
    ("row_status", "dagster", "reported"),
    [
        ("running", {"__typename": "Run", "runId": "r", "status": "FAILURE", **_ENDED}, "failed"),
        ("running", {"__typename": "Run", "runId": "r", "status": "CANCELED", **_ENDED}, "failed"),
        ("queued", {"__typename": "Run", "runId": "r", "status": "STARTED", "startTime": _T0}, "running"),
        ("queued", {"__typename": "Run", "runId": "r", "status": "QUEUED"}, "queued"),
        ("running", {"__typename": "Run", "runId": "r", "status": "SUCCESS", **_ENDED}, "completed"),
        ("running", {"__typename": "Run", "runId": "r", "status": "SUCCESS", "endTime": None}, "running"),
        ("queued", {"__typename": "RunNotFoundError", "message": "no run"}, "queued"),
        ("completed", {"__typename": "Run", "runId": "r", "status": "FAILURE"}, "completed"),
    ],
)
def test_open_rows_follow_dagster(make_app: Any, row_status: str, dagster: dict[str, Any], reported: str) -> None:
    """A run Dagster failed or canceled while the row still says running is reported failed at once."""
    handle = make_app()
    key = handle.bootstrap("t1")
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["query"])
        return httpx.Response(200, json={"data": {"runOrError": dagster}})

    handle.app.state.dagster = _client(handler)
    ctx = handle.app.state.ctx
    with ctx.db.session() as session, session.begin():
        conn = Connection(tenant_id="t1", provider_id="smart", fhir_base="https://ehr.example/fhir", client_id="a")
        session.add(conn)
        session.flush()
        session.add(
            _sync_run("r", conn.id, kind="incremental", status=row_status, counts={"Patient": {"fetched": 1}}, size=5)
        )
        conn_id = conn.id
    body = handle.client.get(SYNC, params={"syncId": "r"}, headers={"X-API-Key": key}).json()
    assert body["status"] == reported, body
    assert body["counts"] == {"Patient": {"fetched": 1}} and body["bytes"] == 5
    assert len(calls) == (0 if row_status == "completed" else 1)  # closed rows never ask Dagster
    if reported == "failed":
        assert dagster["status"] in body["error"]
    if row_status != reported and reported in ("completed", "failed"):  # Dagster's record's end (issue 10)
        assert body["finishedAt"] == datetime.fromtimestamp(_T0 + 42.5, UTC).isoformat(), body
        assert body["durationS"] == 42.5
    elif reported not in ("completed", "failed"):
        assert body["finishedAt"] is None
    history = handle.client.get(SYNC, params={"connectionId": conn_id}, headers={"X-API-Key": key}).json()
    assert [h["status"] for h in history] == [reported]


def _backend_connection(stack: Stack, sandbox: Any, *, group_id: str | None = None) -> str:
    """A SMART Backend Services client registered at the sandbox, its key in the provider config (as in
    production, so the Dagster run's vault can sign its assertion) and a ``backend`` connection row."""
    client_id = f"backend-{uuid.uuid4().hex[:10]}"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = uuid.uuid4().hex[:8]
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    jwk = {"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig", "n": b64(numbers.n), "e": b64(numbers.e)}
    sandbox_admin(
        sandbox,
        "clients",
        {"client_id": client_id, "client_type": "backend", "jwks": {"keys": [jwk]}, "redirect_uris": []},
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with httpx.Client(timeout=10) as http:
        token_endpoint = discover(sandbox.fhir_base, http=http).token_endpoint
    ctx = stack.service.ctx
    with ctx.db.session() as session, session.begin():
        save_provider_config(
            session,
            ctx.cipher,
            tenant_id="t1",
            provider_id="generic",
            config={"auth_method": "private_key_jwt", "private_key_pem": pem, "key_id": kid, "signing_alg": "RS384"},
        )
        conn = Connection(
            tenant_id="t1",
            provider_id="generic",
            kind="group" if group_id else "backend",
            group_id=group_id,
            fhir_base=sandbox.fhir_base,
            issuer=sandbox.fhir_base,
            client_id=client_id,
            token_endpoint=token_endpoint,
            granted_scopes="system/*.rs",
        )
        session.add(conn)
        session.flush()
        return conn.id


def test_bulk_export_end_to_end_bdx08(stack: Stack, sandbox_session: Any) -> None:
    """Bulk start on a backend connection (tenant flag on) runs ``bulk_export``; status shows the bulk job."""
    conn_id = _backend_connection(stack, sandbox_session)
    r = stack.api("POST", BULK_START, json={"connectionId": conn_id})
    assert r.status_code == 202, r.text
    assert r.json()["job"] == "bulk_export"
    final = _poll(stack, BULK_STATUS, r.json()["syncId"], lambda b: b["status"] in ("completed", "failed"))
    assert final["status"] == "completed", final
    bulk = final["bulk"]
    assert bulk is not None and bulk["status"] == "completed", bulk
    assert bulk["statusUrlPresent"] is True and bulk["transactionTime"]
    assert bulk["filesTotal"] > 0 and bulk["filesDone"] == bulk["filesTotal"], bulk
    assert final["counts"] and final["bytes"] > 0


def test_bulk_status_describes_the_export_not_the_membership_jobs_bdx15(stack: Stack, sandbox_session: Any) -> None:
    """Issue 10: a group's second export also runs the BDX-15 membership jobs (member ids, maybe new members);
    bulk status must describe the export itself. Before, it showed the newest job of the run: a membership one.
    """
    conn_id = _backend_connection(stack, sandbox_session, group_id="grp0")
    first = _sync(stack, conn_id, "full", BULK_START)
    assert first["status"] == "completed", first
    second = _sync(stack, conn_id, "full", BULK_START)
    assert second["status"] == "completed", second
    with stack.service.ctx.db.session() as session:
        jobs = session.query(BulkJob).filter_by(run_id=second["syncId"]).all()
        streams = {j.stream: j.id for j in jobs}
    assert any(stream.endswith(":members") for stream in streams), f"no membership check ran: {streams}"
    assert second["bulk"]["jobId"] == streams["bulk:group:grp0"], (second["bulk"], streams)
    assert second["bulk"]["level"] == "group" and second["bulk"]["status"] == "completed"
    assert second["bulk"]["jobId"] == second["counts"]["_bulk"]["job_id"]


def _bulk_job(session: Any, job_id: str, connection_id: str, run_id: str, stream: str, status: str) -> None:
    session.add(
        BulkJob(
            id=job_id,
            connection_id=connection_id,
            run_id=run_id,
            stream=stream,
            type_key="*",
            level="group",
            group_id="g1",
            types=[],
            kickoff_url="https://ehr.example/fhir/Group/g1/$export",
            status_url=f"https://ehr.example/bulk/status/{job_id}",
            status=status,
            requested_at=utcnow(),
        )
    )
    session.flush()


@pytest.mark.parametrize("closed", [True, False], ids=["completed-run", "running-run"])
def test_bulk_status_follows_a_resumed_export(stack: Stack, closed: bool) -> None:
    """A resumed export's job keeps the id of the run that kicked it off: the run that resumed it still reports
    it, whether closed (its summary names the job) or still running (the connection's export in progress).
    Before, only jobs carrying the run's own id were looked at: none here, or the newer membership job."""
    group = _add_connection(stack, "t1", kind="group")
    run_id, earlier, job_id = uuid.uuid4().hex, uuid.uuid4().hex, "job-" + uuid.uuid4().hex[:12]
    with stack.service.ctx.db.session() as session, session.begin():
        session.add(
            _sync_run(
                run_id,
                group,
                kind="bulk",
                status="completed" if closed else "running",
                counts={"_bulk": {"job_id": job_id}} if closed else None,
                created_at=utcnow() - timedelta(minutes=5),
                started_at=utcnow() - timedelta(minutes=5),
                finished_at=utcnow() if closed else None,
            )
        )
        _bulk_job(session, job_id, group, earlier, "bulk:group:g1", "completed" if closed else "downloading")
        if closed:
            _bulk_job(session, "ids-" + job_id, group, run_id, "bulk:group:g1:members", "completed")
    body = stack.api("GET", BULK_STATUS, params={"syncId": run_id}).json()
    assert body["bulk"] is not None and body["bulk"]["jobId"] == job_id, body
