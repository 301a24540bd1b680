"""The production deployment of docs/DEPLOY.md, end to end: the Dagster daemon, the webserver and a gRPC code
server as three separate processes on ``deploy/dagster.yaml`` and ``deploy/workspace.yaml`` (PostgreSQL run, event
and schedule storage, the queued run coordinator), with the app database and the warehouse in PostgreSQL too, and
the sandbox as the EHR.

A patient authorizes (a real SMART launch against the sandbox); the ``connections_sensor`` adds the partition and
requests the first sync, the daemon dequeues it and the default run launcher starts it through the code server;
the ``prune_dagster_runs_schedule`` (its cron set to every minute through ``EHRSYNC_RUN_RETENTION_CRON``, as an
operator could) fires too. The runs are read back through the webserver's GraphQL API over HTTP, the data from the
PostgreSQL warehouse and its flat views.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sandbox import SandboxServer
from store.models import Connection
from tests.deploy.graphql import Run, run_events, runs
from tests.deploy.processes import DEPLOY, Processes, dagster_environment, free_port, port_open, running, wait_for
from tests.engine.helpers import SyncWorld, connect_patient, make_environment
from tests.pgserver import PgServer, create_database
from warehouse import open_warehouse

ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
# The analyst_views job and its sensor (pipelines/defs/analyst) refresh the views after syncs, where they exist.
ANALYST = importlib.util.find_spec("pipelines.defs.analyst") is not None
# How docs/DEPLOY.md starts the code location (host and port added per test).
CODE_SERVER = ["dagster", "code-server", "start", "-m", "pipelines.definitions", "--location-name", "ehrsync"]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


@pytest.fixture
def deployment(tmp_path: Path, pg_server: PgServer) -> dict[str, str]:
    """Three PostgreSQL databases (Dagster storage, app database, warehouse) and a DAGSTER_HOME holding
    deploy/dagster.yaml: the environment every process of the deployment gets."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    suffix = uuid.uuid4().hex[:8]  # a shared server (EHRSYNC_TEST_DATABASE_URL) may serve several test processes
    create_database(pg_server, f"deploy_dagster_{suffix}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "EHRSYNC_", "WAREHOUSE_URL"))}
    return {
        **env,
        **dagster_environment(pg_server, f"deploy_dagster_{suffix}", home),
        "DATABASE_URL": create_database(pg_server, f"deploy_app_{suffix}"),
        "WAREHOUSE_URL": create_database(pg_server, f"deploy_warehouse_{suffix}"),
        "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
        "EHRSYNC_RUN_RETENTION_CRON": "* * * * *",
    }


def _last_sync_recorded(world: SyncWorld, connection_id: str) -> bool:
    """The ``sync_run_success`` run status sensor closed the sync in the app database."""
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        return row is not None and row.last_sync_at is not None


def _all_done(url: str, world: SyncWorld, connection_id: str, procs: Processes) -> tuple[Run, Run] | None:
    """The connection's first sync and a scheduled prune once both ended, the sync recorded by the run status
    sensor, and the analyst views refreshed (when pipelines/defs/analyst exists); a failed run fails the test."""
    seen = runs(url)
    for run in seen:
        if run.status in ("FAILURE", "CANCELED"):
            raise AssertionError(f"run {run.job_name} {run.status}: {run_events(url, run.run_id)}\n{procs.logs()}")
    first = [r for r in seen if r.tags.get("ehrsync/trigger") == "first-sync" and r.status in ENDED]
    prune = [r for r in seen if r.job_name == "prune_dagster_runs" and r.status in ENDED]
    views = not ANALYST or any(r.job_name == "analyst_views" and r.status == "SUCCESS" for r in seen)
    if first and prune and views and _last_sync_recorded(world, connection_id):
        return first[0], prune[0]
    return None


def _warehouse_counts(url: str, connection_id: str) -> dict[str, int]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT resource_type, count(*) FROM fhir_resources WHERE connection_id = %s GROUP BY 1", (connection_id,)
        ).fetchall()
    return {str(t): int(n) for t, n in rows}


def _view_rows(url: str, names: list[str]) -> dict[str, int]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        return {name: int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in names}  # type: ignore[index]


def _views(url: str) -> list[str]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema()"
        ).fetchall()
    return [str(name) for (name,) in rows]


def _connect(tmp_path: Path, env: dict[str, str], sandbox: SandboxServer, http: httpx.Client) -> tuple[SyncWorld, str]:
    """A patient authorizes ehrsync at the sandbox; the connection and its sealed tokens land in the app database."""
    world = make_environment(
        Path(env["EHRSYNC_STATE_DIR"]), http=http, app_db_url=env["DATABASE_URL"], warehouse_target=env["WAREHOUSE_URL"]
    )
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(world.cipher_key).decode()
    return world, connect_patient(world, sandbox, http=http)


def test_daemon_webserver_and_grpc_code_server_on_postgres_sync_a_new_connection_and_fire_a_schedule(
    tmp_path: Path, deployment: dict[str, str], sandbox: SandboxServer, http: httpx.Client
) -> None:
    env = deployment
    world, connection_id = _connect(tmp_path, env, sandbox, http)
    grpc_port, web_port = free_port(), free_port()
    env |= {"EHRSYNC_CODE_SERVER_HOST": "127.0.0.1", "EHRSYNC_CODE_SERVER_PORT": str(grpc_port)}
    workspace = str(DEPLOY / "workspace.yaml")
    graphql = f"http://127.0.0.1:{web_port}/graphql"
    with running(tmp_path) as procs:
        procs.start(
            "code-server",
            [*CODE_SERVER, "-h", "127.0.0.1", "-p", str(grpc_port)],
            env,
        )
        wait_for("the gRPC code server", lambda: port_open(grpc_port), procs, timeout_s=90, every_s=0.3)
        procs.start("webserver", ["dagster-webserver", "-h", "127.0.0.1", "-p", str(web_port), "-w", workspace], env)
        procs.start("daemon", ["dagster-daemon", "run", "-w", workspace], env)
        wait_for(
            "the webserver",
            lambda: httpx.get(graphql.replace("graphql", "server_info")).is_success or None,
            procs,
            timeout_s=90,
        )
        first, prune = wait_for(
            "the first sync, a scheduled prune, the sync recorded and the analyst views",
            lambda: _all_done(graphql, world, connection_id, procs),
            procs,
            timeout_s=180,
            every_s=2,
        )
        events = [kind for kind, _ in run_events(graphql, first.run_id)]
        analyst_views = _view_rows(env["WAREHOUSE_URL"], _views(env["WAREHOUSE_URL"])) if ANALYST else None
    world.env.db.dispose()

    assert first.job_name == "full_resync" and first.status == "SUCCESS"
    assert first.tags["ehrsync/connection"] == connection_id and first.tags["ehrsync/source"] == "generic"
    assert first.tags["dagster/partition"] == connection_id
    # Through the queue: the sensor's request was enqueued, the daemon dequeued and launched it via the code server.
    assert {"RunEnqueuedEvent", "RunStartingEvent", "RunStartEvent", "RunSuccessEvent"} <= set(events), events
    assert prune.status == "SUCCESS" and prune.tags["dagster/schedule_name"] == "prune_dagster_runs_schedule"
    counts = _warehouse_counts(env["WAREHOUSE_URL"], connection_id)
    assert counts.get("Patient") == 1 and counts.get("Observation", 0) > 0, counts
    wh = open_warehouse(env["WAREHOUSE_URL"])
    try:
        names = wh.refresh_flat_tables()
    finally:
        wh.close()
    rows = _view_rows(env["WAREHOUSE_URL"], names)
    assert names and sum(rows.values()) > 0, rows
    if analyst_views is not None:  # the views the analyst_views job made, before this test refreshed any
        assert analyst_views and sum(analyst_views.values()) > 0, analyst_views
