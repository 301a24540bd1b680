"""Fixtures of the Dagster-layer tests: a migrated SQLite app database and a throwaway Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tests.pipelines.appdb import AppDb, make_app_db


@pytest.fixture
def app_db(tmp_path: Path) -> Iterator[AppDb]:
    appdb = make_app_db(f"sqlite:///{tmp_path / 'app.db'}")
    yield appdb
    appdb.db.dispose()


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A throwaway on-disk instance (schedule contexts need an instance that can be referenced)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        yield instance
