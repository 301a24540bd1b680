"""The alembic CLI (``alembic -c store/migrations/alembic.ini ...``) migrates the app database the settings
resolve: before, its ini named ``sqlite:///var/ehrsync/app.db``, a fifth default no ehrsync process opens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "store" / "migrations" / "alembic.ini"
_LOCATIONS = ("EHRSYNC_STATE_DIR", "EHRSYNC_HOME", "DATABASE_URL", "EHRSYNC_DATABASE_URL", "WAREHOUSE_URL")


def _alembic(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in _LOCATIONS}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
        cwd=cwd,
    )


def test_the_alembic_cli_upgrades_the_state_database(tmp_path: Path) -> None:
    proc = _alembic(tmp_path, {"EHRSYNC_STATE_DIR": str(tmp_path / "state")}, "upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    database = tmp_path / "state" / "app.db"
    assert database.exists()
    assert not (tmp_path / "var").exists()
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        assert "alembic_version" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_alembic_cli_uses_database_url(tmp_path: Path) -> None:
    target = tmp_path / "named.sqlite"
    proc = _alembic(tmp_path, {"DATABASE_URL": f"sqlite:///{target}"}, "upgrade", "head")
    assert proc.returncode == 0, proc.stderr
    assert target.exists()
    assert not (tmp_path / "var").exists()
