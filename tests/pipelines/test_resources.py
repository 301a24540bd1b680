"""Resources: explicit timeouts, and the engine's SyncEnvironment built from them."""

from __future__ import annotations

import base64
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError, Definitions, EnvVar, build_sensor_context, job, op
from pydantic import ValidationError

from connectors.errors import ConfigurationError, ResponseTooLargeError
from connectors.fhir import FhirClient
from connectors.smart import discover
from connectors.transport import BodyBounds, LowSpeedLimit
from engine.errors import PipelineConfigurationError
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
from sandbox import SandboxServer
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


def test_default_resources_carry_the_parsed_settings_so_steps_read_no_environment(tmp_path: Path) -> None:
    """Issue 11: the limits the settings checked at start reach the engine through resource config; a step does
    not read EHRSYNC_* itself (it read them lazily before, so a value changed mid-deployment split a run)."""
    settings = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path),
            "EHRSYNC_MAX_RESOURCE_BYTES": "2048",
            "EHRSYNC_MAX_RESPONSE_BYTES": "4096",
            "EHRSYNC_REQUEST_DEADLINE_S": "7",
            "EHRSYNC_STEP_BUDGET_S": "11",
            "EHRSYNC_BULK_MAX_FILE_BYTES": "1048576",
            "EHRSYNC_MIN_FREE_DISK_BYTES": "0",
            "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": "512",
            "EHRSYNC_BULK_LOW_SPEED_WINDOW_S": "30",
            "EHRSYNC_BULK_FILE_DEADLINE_S": "3600",
            "EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS": "3",
            "EHRSYNC_KEEPALIVE_IDLE_DAYS": "5",
            "EHRSYNC_RETRY_BASE_SECONDS": "60",
        }
    )
    resources = default_resources(settings)
    landing, ehr_http = resources["landing"], resources["ehr_http"]
    assert isinstance(landing, LandingZoneResource) and isinstance(ehr_http, EhrHttpResource)
    assert landing.zone().max_resource_bytes == 2048
    assert landing.limits() == {
        "step_budget_s": 11.0,
        "bulk_max_file_bytes": 1048576,
        "bulk_merge_group_bytes": 256 * 1024 * 1024,
        "min_free_disk_bytes": 0,
        "lock_wait_s": 3.0,
        "bulk_low_speed": LowSpeedLimit(512.0, 30.0),
        "bulk_file_deadline_s": 3600.0,
    }
    off = PipelineSettings.from_env(
        {
            "EHRSYNC_STATE_DIR": str(tmp_path),
            "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": "0",
            "EHRSYNC_BULK_FILE_DEADLINE_S": "0",
        }
    )
    off_limits = default_resources(off)["landing"].limits()  # type: ignore[attr-defined]
    assert off_limits["bulk_low_speed"] is None and off_limits["bulk_file_deadline_s"] is None
    usual = default_resources(PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path)}))["landing"]
    assert usual.limits()["bulk_file_deadline_s"] == 86400.0  # type: ignore[attr-defined]
    for variable in ("EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S", "EHRSYNC_BULK_FILE_DEADLINE_S"):
        for negative in ("-0.5", "-1"):
            with pytest.raises(PipelineConfigurationError, match=rf"^{variable} must be 0 \(no limit\)"):
                PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(tmp_path), variable: negative})
    rooted = {"root": str(tmp_path), "attachments_root": str(tmp_path)}
    for field, bad in [
        ("bulk_low_speed_bytes_per_s", -1.0),
        ("bulk_low_speed_window_s", 0.0),
        ("bulk_file_deadline_s", -1.0),
    ] + [
        (field, float(value))
        for field in ("bulk_low_speed_bytes_per_s", "bulk_low_speed_window_s", "bulk_file_deadline_s")
        for value in ("inf", "nan")
    ]:
        with pytest.raises(ValidationError, match=field):  # the UI's run config is refused as the resource is built
            LandingZoneResource(**rooted, **{field: bad})
    assert LandingZoneResource(**rooted, bulk_low_speed_window_s=30).limits() == {
        "bulk_low_speed": LowSpeedLimit(1024.0, 30.0)
    }
    bounds = ehr_http.bounds()
    assert bounds is not None and (bounds.max_bytes, bounds.deadline_s) == (4096, 7.0)
    assert settings.limits.request_bounds() == bounds  # what `ehrsync purge --disconnect` sends with
    assert resources["policy"].keepalive_idle_days == 5  # type: ignore[attr-defined]
    assert resources["retry"].base_seconds == 60  # type: ignore[attr-defined]


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


def test_the_resources_request_bounds_reach_smart_calls_made_with_its_client(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's ``ehr_http`` limits (set from the settings, or overridden in the launchpad's run config) bound the
    vault's discovery and token calls, which take only the resource's client, as they bound FHIR calls; before,
    those calls read the environment instead."""
    monkeypatch.setenv("EHRSYNC_MAX_RESPONSE_BYTES", str(300 * 1024 * 1024))
    resource = EhrHttpResource(max_response_bytes=1048576, request_deadline_s=30.0)
    try:
        assert FhirClient(sandbox.fhir_base, None, http=resource.client()).bounds == BodyBounds(1048576, 30.0)
        sandbox.admin.set_fault("huge_body", path="/fhir/.well-known/smart-configuration")
        with pytest.raises(ResponseTooLargeError, match="1048576-byte response limit"):
            discover(sandbox.fhir_base, http=resource.client())
    finally:
        resource.close()


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


def test_the_writeback_waits_are_settings_and_a_wait_that_is_no_positive_number_is_refused() -> None:
    """``accepted_wait_s``, ``lookup_wait_s``, ``binary_posts_max`` (and the polls' count and interval) were fixed in
    the engine: the resource had no field for them. Now they reach the run's config, and a zero, negative or
    infinite wait is refused as the resource is built, naming the field."""
    chosen = {"accepted_wait_s": 30.0, "lookup_wait_s": 45.0, "binary_posts_max": 2, "accepted_polls": 4}
    config = WritebackResource(
        **chosen, service_write_enabled=False, accepted_poll_s=0.5, retry_after_cap_s=3600.0
    ).config()
    assert (config.accepted_wait_s, config.lookup_wait_s, config.binary_posts_max, config.accepted_polls) == (
        30.0,
        45.0,
        2,
        4,
    )
    assert (config.accepted_poll_s, config.retry_after_cap_s) == (0.5, 3600.0)
    for field in ("accepted_wait_s", "lookup_wait_s", "accepted_poll_s", "stalled_after_s", "retry_after_cap_s"):
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValidationError, match=field):
                WritebackResource(service_write_enabled=False, **{field: bad})
    for field in ("binary_posts_max", "accepted_polls"):
        with pytest.raises(ValidationError, match=field):
            WritebackResource(service_write_enabled=False, **{field: 0})


def test_a_writeback_wait_past_a_year_is_refused_naming_the_field() -> None:
    """A wait of 1e12 s (finite, above 0) was accepted: the next-attempt time it gives is past year 9999, so a 202's
    ``accepted_wait_s`` raised OverflowError before the note left ``sending`` (a resumed run would POST it again,
    which If-None-Exist cannot stop for a note not filed yet), and a retry's backoff crashed the run. Every wait is
    at most a year now, refused naming the field as the resource is built."""
    waits = ("backoff_base_s", "backoff_cap_s", "retry_after_cap_s", "stalled_after_s", "accepted_wait_s")
    for field in (*waits, "accepted_poll_s", "lookup_wait_s"):
        with pytest.raises(ValidationError, match=field):
            WritebackResource(service_write_enabled=False, **{field: 1e12})
        assert (
            getattr(WritebackResource(service_write_enabled=False, **{field: 366 * 86_400.0}).config(), field)
            == 366 * 86_400.0
        )


def test_a_run_config_for_the_writeback_resource_must_state_the_switch() -> None:
    """A run's config for the ``writeback`` resource (docs/WRITEBACK.md, "Settings": Launchpad) replaces the
    configuration it was built with as a whole: one setting only (``lookup_wait_s``) and ``service_write_enabled``
    fell back to false, silently, so the run ``blocked`` its note as ``vendor_disabled`` while SMART_ENABLE_WRITE was
    on. The switch must be stated there now: leaving it out is a config error naming it."""
    seen: list[bool] = []

    @op
    def read_switch(writeback: WritebackResource) -> None:
        seen.append(writeback.config().service_write_enabled)

    @job
    def one_op() -> None:
        read_switch()

    on = Definitions(jobs=[one_op], resources={"writeback": WritebackResource(service_write_enabled=True)})
    on.get_job_def("one_op").execute_in_process()
    assert seen == [True]
    with pytest.raises(DagsterInvalidConfigError, match="service_write_enabled"):
        on.get_job_def("one_op").execute_in_process(
            run_config={"resources": {"writeback": {"config": {"lookup_wait_s": 600.0}}}}
        )
    assert seen == [True]
    chosen = {"service_write_enabled": True, "lookup_wait_s": 600.0}
    on.get_job_def("one_op").execute_in_process(run_config={"resources": {"writeback": {"config": chosen}}})
    assert seen == [True, True]
