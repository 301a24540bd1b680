"""Resources: explicit timeouts, the app database and vault they open, and the engine's SyncEnvironment built from
them (the limits and waits they carry: test_resources_limits.py)."""

from __future__ import annotations

import base64
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, EnvVar, build_sensor_context

from connectors.errors import ConfigurationError
from engine.settings import PipelineSettings
from pipelines.defs._shared.environment import sync_environment
from pipelines.defs.connections.sensors import connections_sensor
from pipelines.defs.sync.type_assets import duplicate_check
from pipelines.defs.writeback.resources import WritebackResource
from pipelines.defs.writeback.sensors import note_outbox_sensor
from pipelines.resources import (
    AppDatabaseResource,
    EhrHttpResource,
    LandingZoneResource,
    RetryPolicyResource,
    SyncPolicyResource,
    WarehouseResource,
    default_resources,
)
from store import TokenCipher
from tests.pipelines.appdb import AppDb
from warehouse.duckdb_backend import DuckDBWarehouse


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://u:pw@127.0.0.1:5432/app",
            "postgresql+psycopg://u:pw@127.0.0.1:5432/app?connect_timeout=7",
        ),
        (
            "postgresql+psycopg://u@127.0.0.1/app?connect_timeout=3",
            "postgresql+psycopg://u@127.0.0.1/app?connect_timeout=3",
        ),
        ("sqlite:////tmp/app.db", "sqlite:////tmp/app.db"),
    ],
)
def test_app_db_url_gets_an_explicit_connect_timeout(url: str, expected: str) -> None:
    assert AppDatabaseResource(url=url, connect_timeout_s=7).engine_url() == expected


def test_http_client_has_the_configured_timeouts_and_is_shared_until_closed() -> None:
    resource = EhrHttpResource(connect_timeout_s=3, read_timeout_s=45, pool_timeout_s=5)
    client = resource.client()
    assert client.timeout.connect == 3
    assert client.timeout.read == 45
    assert client.timeout.pool == 5
    assert client.follow_redirects is False
    assert resource.client() is client
    resource.close()
    assert client.is_closed
    assert resource.client() is not client
    resource.close()


def test_sync_environment_wires_the_resources(app_db: AppDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())
    landing = LandingZoneResource(root=str(tmp_path / "landing"), attachments_root=str(tmp_path / "att"))
    warehouse = WarehouseResource(target=str(tmp_path / "wh.duckdb"))
    http = EhrHttpResource(fetch_allowed_hosts="files.clinic.local, 10.0.0.5:8443")
    policy = SyncPolicyResource(page_size=37, overlap_seconds=11, bulk_membership_check=False)
    with sync_environment(AppDatabaseResource(url=app_db.url), landing, warehouse, http, policy) as env:
        assert (env.page_size, env.overlap, env.bulk_membership_check) == (37, timedelta(seconds=11), False)
        assert env.warehouse_target == str(tmp_path / "wh.duckdb")
        assert env.http is http.client()
        assert env.db.dialect == "sqlite"
        assert env.fetch_allowed_hosts == ("files.clinic.local", "10.0.0.5:8443")
    http.close()


def test_missing_token_key_is_a_clear_configuration_error(
    app_db: AppDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTEGRATIONS_TOKEN_ENC_KEY", raising=False)
    landing = LandingZoneResource(root=str(tmp_path / "landing"), attachments_root=str(tmp_path / "att"))
    warehouse = WarehouseResource(target=str(tmp_path / "wh.duckdb"))
    db = AppDatabaseResource(url=app_db.url)
    environment = sync_environment(db, landing, warehouse, EhrHttpResource(), SyncPolicyResource())
    with pytest.raises(ConfigurationError, match="INTEGRATIONS_TOKEN_ENC_KEY"), environment:
        pass


def test_duplicate_check_reports_a_busy_warehouse_instead_of_failing_the_asset(tmp_path: Path) -> None:
    """The rows are committed before the check runs: a DuckDB file another writer holds past the lock timeout
    fails the check with the reason, it does not raise (which would fail a materialization that succeeded)."""
    target = tmp_path / "wh.duckdb"
    busy = DuckDBWarehouse(target)
    free = WarehouseResource(target=str(target), lock_timeout_s=0.2)
    assert duplicate_check(free, "c1")[1].passed  # empty warehouse: no duplicates
    with busy.batch():  # another process's export holds the write lock
        live, verdict = duplicate_check(free, "c1")
    assert live is None and not verdict.passed  # no row count to report, rather than a false 0
    assert "could not count keys" in verdict.description and verdict.metadata["error"] == "WarehouseLockTimeoutError"
    busy.close()


def test_vault_key_is_bound_by_name_when_the_process_has_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The key reaches the vault as ``EnvVar`` resource config (Dagster shows the name, never the value)."""
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", key)
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("INTEGRATIONS_TOKEN_ENC_KEYS_OLD", raising=False)
    app_db = default_resources(PipelineSettings.from_env())["app_db"]
    assert isinstance(app_db, AppDatabaseResource)
    assert (
        isinstance(app_db.token_enc_key, EnvVar) and app_db.token_enc_key.env_var_name == "INTEGRATIONS_TOKEN_ENC_KEY"
    )
    assert app_db.token_enc_keys_old is None
    configured = AppDatabaseResource(url="sqlite:///unused.db", token_enc_key=key)
    monkeypatch.delenv("INTEGRATIONS_TOKEN_ENC_KEY")
    cipher = configured.cipher()  # the configured key: the environment no longer has one
    sealed = cipher.encrypt("x", tenant_id="t", owner_id="o", field="f")
    assert TokenCipher(base64.b64decode(key)).decrypt(sealed, tenant_id="t", owner_id="o", field="f") == "x"


def test_every_step_that_syncs_gets_the_sync_policy() -> None:
    """A step that builds a ``SyncEnvironment`` (it needs ``ehr_http``) also needs ``policy``: without it the
    warehouse upserts, the reference step and reconciliation searched with the default page size (the setting
    was ignored)."""
    from dagster import DagsterInstance, OpDefinition

    from pipelines.definitions import build_definitions

    # Loading definitions reads the current instance's state storage: give it a live one, as every process does,
    # not whatever instance an earlier test in this process left closed behind Dagster's context variable.
    with DagsterInstance.ephemeral():
        jobs = build_definitions().get_repository_def().get_all_jobs()
    ops = {op.name: op for job in jobs for op in job.all_node_defs if isinstance(op, OpDefinition)}
    syncing = {name for name, op in ops.items() if "ehr_http" in op.required_resource_keys}
    assert len(syncing) > 10  # the landing and warehouse steps of every type, references, bulk, reconciliation
    assert not {name for name in syncing if "policy" not in ops[name].required_resource_keys}


def test_the_signing_key_reaches_the_vault_through_the_resource(
    app_db: AppDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EHR_JWT_PRIVATE_KEY set at load is bound by name (the UI shows no PEM) and handed to the vault, which
    signs with it instead of reading the process environment when it mints a token."""
    monkeypatch.setenv("EHRSYNC_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("EHR_JWT_PRIVATE_KEY", "/keys/backend.pem")
    bound = default_resources(PipelineSettings.from_env())["app_db"]
    assert isinstance(bound, AppDatabaseResource)
    assert isinstance(bound.jwt_private_key, EnvVar) and bound.jwt_private_key.env_var_name == "EHR_JWT_PRIVATE_KEY"
    unbound = default_resources(PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)}))["app_db"]
    assert isinstance(unbound, AppDatabaseResource) and unbound.jwt_private_key is None

    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(os.urandom(32)).decode())
    resource = AppDatabaseResource(url=app_db.url, jwt_private_key="/keys/bound.pem")
    with resource.open() as db:
        environ = resource.vault(db)._grants.environ
    assert environ is not None and environ["EHR_JWT_PRIVATE_KEY"] == "/keys/bound.pem"


def test_an_unreachable_app_database_is_one_clear_error_in_every_sensor(dagster_instance: DagsterInstance) -> None:
    """A tick (or step) whose app database is down fails with the one line that names it and the variable to
    check, never the driver's traceback text nor the password of the URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app_db = AppDatabaseResource(url=f"postgresql+psycopg://ehrsync:hunter2@127.0.0.1:{port}/app", connect_timeout_s=2)
    for tick, resources in (
        (note_outbox_sensor, {"app_db": app_db, "writeback": WritebackResource(service_write_enabled=False)}),
        (connections_sensor, {"app_db": app_db, "retry": RetryPolicyResource()}),
    ):
        with pytest.raises(ConfigurationError) as raised:
            tick(build_sensor_context(instance=dagster_instance, resources=resources))
        text = str(raised.value)
        assert text.startswith("app database error") and "DATABASE_URL" in text, text
        assert "hunter2" not in text and "sqlalche.me" not in text
