"""Settings built from a mapping (tests, the demo, callers that assembled an environment) read that mapping only:
before, a variable the mapping left out was still read from the process environment, so the operator's
``DATABASE_URL`` or ``DAGSTER_HOME`` leaked into a configuration that deliberately omitted it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import PipelineSettings
from pipelines.resources import AppDatabaseResource, SyncPolicyResource, WarehouseResource, default_resources
from settings import load_app_settings


@pytest.fixture
def operator_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A process environment naming another database, warehouse, state and Dagster home than the mapping."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/operator.db")
    monkeypatch.setenv("EHRSYNC_DATABASE_URL", f"sqlite:///{tmp_path}/operator2.db")
    monkeypatch.setenv("WAREHOUSE_URL", str(tmp_path / "operator.duckdb"))
    monkeypatch.setenv("EHRSYNC_HOME", str(tmp_path / "operator_state"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "operator_home"))
    monkeypatch.setenv("EHRSYNC_SYNC_OVERLAP_SECONDS", "17")
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", "not-read")
    return tmp_path


def test_an_empty_mapping_reads_nothing_from_the_process(operator_environment: Path) -> None:
    state = (operator_environment / "mapped").resolve()
    app = load_app_settings({"EHRSYNC_STATE_DIR": str(state)})
    assert app.database_url == f"sqlite:///{state / 'app.db'}"
    assert app.database_url_variable is None
    assert app.warehouse_url == str(state / "warehouse.duckdb")
    assert app.dagster_home == state / "dagster_home"
    assert app.engine_values() == {}
    assert app.vault_key_variables == ()
    assert "operator" not in load_app_settings({}).database_url


def test_the_process_environment_is_still_read_without_a_mapping(operator_environment: Path) -> None:
    app = load_app_settings()
    assert app.database_url == f"sqlite:///{operator_environment}/operator.db"
    assert app.dagster_home == (operator_environment / "operator_home").resolve()
    assert app.engine_values() == {"EHRSYNC_SYNC_OVERLAP_SECONDS": "17"}


def test_resources_of_a_mapping_bind_its_values_not_the_process_variables(operator_environment: Path) -> None:
    state = (operator_environment / "mapped").resolve()
    settings = PipelineSettings.from_env({"EHRSYNC_STATE_DIR": str(state)})
    resources = default_resources(settings)
    app_db, warehouse, policy = resources["app_db"], resources["warehouse"], resources["policy"]
    assert isinstance(app_db, AppDatabaseResource) and isinstance(warehouse, WarehouseResource)
    assert isinstance(policy, SyncPolicyResource)
    assert app_db.url == f"sqlite:///{state / 'app.db'}"
    assert app_db.token_enc_key is None and app_db.jwt_private_key is None
    assert warehouse.target == str(state / "warehouse.duckdb")
    assert policy.overlap_seconds == 300
    assert settings.dagster_home == state / "dagster_home"


def test_the_signing_key_check_reads_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ehrsync sync`` checks the EHR_JWT_PRIVATE_KEY of its settings (a mapping's, when given one)."""
    from connectors.errors import ConfigurationError
    from ehrsync.commands.common import check_signing_key

    monkeypatch.setenv("EHR_JWT_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    check_signing_key(load_app_settings({}))  # the mapping sets no key: nothing to check
    assert "EHR_JWT_PRIVATE_KEY" in load_app_settings().vault_key_variables
    with pytest.raises(ConfigurationError, match="EHR_JWT_PRIVATE_KEY"):
        check_signing_key()
