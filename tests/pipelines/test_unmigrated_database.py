"""An app database that was never migrated is a configuration error naming the fix, never a traceback."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.errors import ConfigurationError
from ehrsync.run_now import run_sync_now
from engine.connection_snapshots import read_connection, read_connections
from engine.settings import PipelineSettings
from store import AppDatabase


def _fresh_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


def test_read_connection_on_unmigrated_db_names_the_fix(tmp_path: Path) -> None:
    db = AppDatabase.from_url(_fresh_db(tmp_path))
    try:
        with pytest.raises(ConfigurationError, match="ehrsync db migrate"):
            read_connection(db, "c1")
        with pytest.raises(ConfigurationError, match="ehrsync db migrate"):
            read_connections(db)
    finally:
        db.dispose()


def test_run_sync_now_on_unmigrated_db_is_typed(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(
        {"EHRSYNC_STATE_DIR": str(tmp_path / "s"), "DATABASE_URL": _fresh_db(tmp_path)}
    )
    with pytest.raises(ConfigurationError, match="no connections table"):
        run_sync_now("nonexistent", settings=settings)


def test_cli_sync_on_fresh_state_prints_one_line_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("EHRSYNC_DATABASE_URL", "DAGSTER_HOME")}
    env.update({"DATABASE_URL": _fresh_db(tmp_path), "EHRSYNC_STATE_DIR": str(tmp_path / "state")})
    # A valid vault key: `ehrsync sync` checks it before any work, and this test is about the database.
    env["INTEGRATIONS_TOKEN_ENC_KEY"] = base64.b64encode(os.urandom(32)).decode()
    cli = Path(sys.executable).parent / "ehrsync"
    done = subprocess.run(
        [str(cli), "sync", "nonexistent"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "Error: configuration_error: no app database at " in done.stderr  # and none made: tests/ehrsync/test_cli.py
