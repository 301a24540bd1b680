"""The sync API's real stack for tests (issue 5): the sandbox EHR, the auth service over a socket and ``dagster dev``
(webserver + daemon) on a free port, sharing one state folder; and what the tests do with it (start and follow a
sync, read the warehouse, add connections and runs by hand).

``tests/auth_service/conftest.py`` makes one stack per test module (fixture ``stack``): the REST and the bulk halves
of the sync API's tests live in two files so that pytest-xdist (``--dist loadfile``) runs them on two workers.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
from cryptography.hazmat.primitives import serialization

from auth_service.core.config import Settings, load_settings
from auth_service.services.dagster_client import (
    JobSelector,
)
from auth_service.services.tenants import bootstrap_tenant
from auth_service.tenants.settings import TenantSeed
from connectors.smart import discover
from connectors.transport.tls import default_ssl_context
from engine.models import BulkJob, SyncRun, utcnow
from store import save_provider_config
from store.models import Connection
from tests.auth_service.ehr import Service, authorize_headless, patient_ids, running_service, sandbox_admin
from tests.auth_service.keyutil import enc_key, rsa_pem
from tests.fixtures.client_keys import backend_client_key
from warehouse._filelock import file_lock

SYNC = "/api/ehr/sync"
BULK_START = "/api/integrations/ehr/bulk/start"
BULK_STATUS = "/api/integrations/ehr/bulk/status"
WHERE = JobSelector("pipelines.definitions", "__repository__", "incremental_sync")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GraphQL call to the test's ``dagster dev``. A 5xx is retried a few times: on a loaded CI machine its
    webserver once answered 500 to ``stopSensor`` while the daemon wrote the same SQLite storage, without a log
    line (a transient lock on the instance's SQLite files, not an answer about ehrsync)."""
    for attempt in range(5):
        r = httpx.post(
            url, json={"query": query, "variables": variables or {}}, timeout=60, verify=default_ssl_context()
        )
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
        """SIGKILL to the whole group (webserver, daemon, code server, a run's process), then wait until it is
        empty. Not dagster dev's graceful SIGINT: its shutdown waited ~8 s per module for the daemon's threads, and
        the state folder goes with the test (``ehrsync ui``'s Ctrl-C and SIGTERM are tests/ehrsync/test_ui.py's)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
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

    port = free_port()
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
        return httpx.request(
            method, self.service.base_url + path, headers=headers, timeout=30, **kwargs, verify=default_ssl_context()
        )


def add_connection(stack: Stack, tenant_id: str, *, kind: str = "patient", status: str = "active") -> str:
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


@contextmanager
def running_stack(sandbox_session: Any, state: Path) -> Iterator[Stack]:
    """The auth service (tenants t1 with bulk export on, and t2) and ``dagster dev`` over one state folder."""
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
    port_holder["url"] = f"http://127.0.0.1:{free_port()}/graphql"
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


def connect_patient(stack: Stack, sandbox_session: Any) -> str:
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


def sync_run(
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


def poll(stack: Stack, path: str, sync_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
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


def dagster_run(stack: Stack, run_id: str) -> dict[str, Any]:
    """The run as Dagster's own record has it (status, startTime, endTime in epoch seconds)."""
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status startTime endTime } } }"
    run: dict[str, Any] = _graphql(stack.dagster.graphql_url, query, {"id": run_id})["data"]["runOrError"]
    return run


def dagster_run_tags(stack: Stack, run_id: str) -> dict[str, str]:
    """The run's tags as Dagster stored them."""
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"
    run = _graphql(stack.dagster.graphql_url, query, {"id": run_id})["data"]["runOrError"]
    return {t["key"]: t["value"] for t in run["tags"]}


def closed_row(stack: Stack, run_id: str) -> SyncRun:
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


def sync(stack: Stack, connection_id: str, mode: str, path: str = SYNC) -> dict[str, Any]:
    """Start a sync and follow it to its end; no answer on the way may show an end without its time."""
    body = {"connectionId": connection_id} if path == BULK_START else {"connectionId": connection_id, "mode": mode}
    r = stack.api("POST", path, json=body)
    assert r.status_code == 202, r.text
    seen: list[dict[str, Any]] = []

    def done(b: dict[str, Any]) -> bool:
        seen.append(b)
        return b["status"] in ("completed", "failed")

    final = poll(stack, BULK_STATUS if path == BULK_START else SYNC, r.json()["syncId"], done)
    ended = [b for b in seen if b["status"] in ("completed", "failed")]
    assert all(b["finishedAt"] and b["durationS"] is not None for b in ended), ended
    return {**final, "job": r.json()["job"]}


def warehouse_rows(stack: Stack, sql: str, params: list[str]) -> list[tuple[Any, ...]]:
    """Read the stack's warehouse as ehrsync's own readers do: under the shared side of its lock file, so a write
    still going on in another process (a run's asset checks, the next sensor-launched run) is waited for instead of
    failing the read with DuckDB's "Conflicting lock"."""
    path = stack.state / "warehouse.duckdb"
    lock = path.with_name(path.name + ".lock")
    with file_lock(lock, exclusive=False, timeout_s=60), duckdb.connect(str(path), read_only=True) as wh:
        return wh.execute(sql, params).fetchall()


def warehouse_count(stack: Stack, connection_id: str, resource_type: str) -> int:
    rows = warehouse_rows(
        stack,
        "SELECT count(*) FROM fhir_resources WHERE connection_id = ? AND resource_type = ?",
        [connection_id, resource_type],
    )
    return int(rows[0][0]) if rows else 0


def backend_connection(stack: Stack, sandbox: Any, *, group_id: str | None = None) -> str:
    """A SMART Backend Services client registered at the sandbox, its key in the provider config (as in
    production, so the Dagster run's vault can sign its assertion) and a ``backend`` connection row."""
    client_id = f"backend-{uuid.uuid4().hex[:10]}"
    key = backend_client_key()
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
    with httpx.Client(timeout=10, verify=default_ssl_context()) as http:
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


def bulk_job(session: Any, job_id: str, connection_id: str, run_id: str, stream: str, status: str) -> None:
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
