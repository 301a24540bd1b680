"""One configuration (issue 11): for the same environment the CLI, the auth service and the pipelines resolve the
same app database and warehouse. Before, four defaults existed (``var/demo``, ``var/auth_service``,
``var/ehrsync`` and ``<state>``), so ``ehrsync db migrate`` could migrate another database than ``ehrsync sync``
used."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import EnvVar

from auth_service.core.config import load_settings
from ehrsync.commands.common import database_url as cli_database_url
from engine.settings import PipelineSettings
from pipelines.definitions import build_definitions

_KEY = base64.b64encode(os.urandom(32)).decode()
_LOCATIONS = ("EHRSYNC_STATE_DIR", "EHRSYNC_HOME", "DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL")

# (case id, environment, expected app database, expected warehouse); {tmp} is the test's folder, {cwd} the
# working directory the default state (var/demo) is resolved against.
CASES = [
    ("nothing-set", {}, "sqlite:///{cwd}/var/demo/app.db", "{cwd}/var/demo/warehouse.duckdb"),
    ("state-dir-only", {"EHRSYNC_STATE_DIR": "{tmp}/s"}, "sqlite:///{tmp}/s/app.db", "{tmp}/s/warehouse.duckdb"),
    ("ehrsync-home", {"EHRSYNC_HOME": "{tmp}/h"}, "sqlite:///{tmp}/h/app.db", "{tmp}/h/warehouse.duckdb"),
    (
        "database-url",
        {"EHRSYNC_STATE_DIR": "{tmp}/s", "DATABASE_URL": "sqlite:///{tmp}/db.sqlite"},
        "sqlite:///{tmp}/db.sqlite",
        "{tmp}/s/warehouse.duckdb",
    ),
    (
        "ehrsync-database-url",
        {"EHRSYNC_DATABASE_URL": "sqlite:///{tmp}/ehrsync.sqlite"},
        "sqlite:///{tmp}/ehrsync.sqlite",
        "{cwd}/var/demo/warehouse.duckdb",
    ),
    (
        "both-database-urls",
        {
            "DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:5/app",
            "EHRSYNC_DATABASE_URL": "sqlite:///{tmp}/ehrsync.sqlite",
            "WAREHOUSE_URL": "{tmp}/wh.duckdb",
        },
        "postgresql+psycopg://u@127.0.0.1:5/app",
        "{tmp}/wh.duckdb",
    ),
]


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean process environment (no location variables) in a throwaway working directory."""
    for name in (*_LOCATIONS, "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", _KEY)
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def _resolved(value: str) -> str:
    """A resource field as Dagster resolves it when a run starts (an ``EnvVar`` reads the process environment)."""
    return str(value.get_value()) if isinstance(value, EnvVar) else value


@pytest.mark.parametrize(("env", "database", "warehouse"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_auth_service_and_pipelines_agree(
    environment: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], database: str, warehouse: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=environment))
    expected_db = database.format(tmp=environment, cwd=environment)
    expected_wh = warehouse.format(tmp=environment, cwd=environment)

    auth = load_settings()
    pipelines = PipelineSettings.from_env()
    resources = build_definitions().resources or {}

    assert cli_database_url() == expected_db
    assert auth.database_url == expected_db
    assert pipelines.database_url == expected_db
    assert _resolved(resources["app_db"].url) == expected_db
    assert auth.warehouse_url == pipelines.warehouse_url == expected_wh
    assert _resolved(resources["warehouse"].target) == expected_wh
    assert auth.state_dir == pipelines.state_dir


def test_a_url_the_operator_set_is_bound_by_name_not_shown_as_config(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password in DATABASE_URL / WAREHOUSE_URL is not written into resource config the UI displays."""
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:5/app")
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql+psycopg://u:secret@127.0.0.1:5/wh")
    resources = build_definitions().resources or {}
    assert isinstance(resources["app_db"].url, EnvVar) and resources["app_db"].url.env_var_name == "DATABASE_URL"
    assert isinstance(resources["warehouse"].target, EnvVar)


def test_db_migrate_creates_the_database_sync_and_the_auth_service_use(environment: Path) -> None:
    """``ehrsync db migrate`` with only EHRSYNC_STATE_DIR set migrates ``<state>/app.db``, the file the other
    processes open (it migrated ``var/demo/app.db`` in the working directory before)."""
    env = {k: v for k, v in os.environ.items() if k not in (*_LOCATIONS, "DAGSTER_HOME")}
    env["EHRSYNC_STATE_DIR"] = str(environment / "state")
    proc = subprocess.run(
        [sys.executable, "-m", "ehrsync.cli", "db", "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=environment,
    )
    assert proc.returncode == 0, proc.stderr
    assert (environment / "state" / "app.db").exists()
    assert not (environment / "var").exists()
    state_env = {"EHRSYNC_STATE_DIR": str(environment / "state")}
    assert PipelineSettings.from_env(state_env).database_url == f"sqlite:///{environment / 'state' / 'app.db'}"


_IMPORT_EVERY_MODULE = """
import importlib, pkgutil
for name in ("settings", "connectors", "warehouse", "store", "engine", "pipelines"):
    for info in pkgutil.walk_packages(importlib.import_module(name).__path__, name + "."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
from pipelines.definitions import defs
try:
    defs()
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_no_module_reads_the_settings_at_import(environment: Path) -> None:
    """Every library module (and the Dagster code location) imports under a malformed configuration; the
    settings are read when a composition root asks (here: Dagster loading ``defs``), which names the variable."""
    env = {k: v for k, v in os.environ.items() if k not in (*_LOCATIONS, "DAGSTER_HOME")}
    env.update(
        {"EHRSYNC_QUARANTINE_MAX_RATIO": "lots", "EHRSYNC_RETRY_BASE_SECONDS": "soon", "WAREHOUSE_URL": "ftp://x"}
    )
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("PipelineConfigurationError WAREHOUSE_URL scheme 'ftp'"), proc.stdout
