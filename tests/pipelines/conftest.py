"""Fixtures of the Dagster-layer tests: a migrated SQLite app database, a throwaway Dagster instance, and a
sync world the code location can open (the same state folder and vault key)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance

from tests.engine.helpers import SyncWorld, make_environment
from tests.fixtures.app_db import copy_migrated_sqlite
from tests.pipelines.appdb import AppDb, make_app_db


@pytest.fixture
def app_db(tmp_path: Path) -> Iterator[AppDb]:
    target = tmp_path / "app.db"
    copy_migrated_sqlite(target)
    appdb = make_app_db(f"sqlite:///{target}", migrated=True)
    yield appdb
    appdb.db.dispose()


@pytest.fixture
def dagster_instance() -> Iterator[DagsterInstance]:
    """An in-memory instance: runs, partitions and events without touching disk."""
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def dagster_instance_on_disk(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A throwaway on-disk instance, for contexts that need an instance reference (schedules)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        yield instance


@pytest.fixture
def world(tmp_path: Path, http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncWorld]:
    """A sync world under ``<tmp>/state``: settings built with ``EHRSYNC_STATE_DIR=<tmp>/state`` find its app
    database, landing zone and warehouse, and the process environment carries its vault key (as in production).
    DAGSTER_HOME is unset so that a developer's own instance is never touched."""
    made = make_environment(tmp_path / "state", http=http)
    monkeypatch.setenv("INTEGRATIONS_TOKEN_ENC_KEY", base64.b64encode(made.cipher_key).decode())
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    yield made
    made.env.db.dispose()
