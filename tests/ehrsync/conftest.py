"""Fixtures the CLI tests that sync against the sandbox share (``test_cli_runs``, ``test_cli_purge``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, make_environment


@pytest.fixture(scope="module")
def ehr() -> Iterator[SandboxServer]:
    """One patient, so every resource the sandbox deletes belongs to the connection under test."""
    with SandboxServer(SandboxConfig(patients=1, seed=5)) as server:
        yield server


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SyncWorld]:
    """A state folder the CLI reads through ``EHRSYNC_STATE_DIR`` (app database, warehouse, Dagster home)."""
    with httpx.Client(timeout=30.0) as http:
        made = make_environment(tmp_path / "state", http=http)
        yield made
        made.env.db.dispose()
