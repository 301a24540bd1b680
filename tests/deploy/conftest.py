"""A DAGSTER_HOME holding deploy/dagster.yaml over a fresh PostgreSQL storage database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.processes import dagster_environment
from tests.pgserver import PgServer, create_database


@pytest.fixture
def pg_home(tmp_path: Path, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The home, with its storage variables set in the environment as an operator would (``DAGSTER_PG_DB`` names
    the database, for tests that read it directly)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    name = f"dg_{uuid.uuid4().hex[:12]}"
    create_database(pg_server, name)
    for key, value in dagster_environment(pg_server, name, home).items():
        monkeypatch.setenv(key, value)
    yield home
