"""Fixtures the CLI tests share: a sandbox and a state folder (``test_cli_runs``, ``test_cli_purge``), and the stop
signals of a process started from a terminal (``test_process_group``, ``test_ui``)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.transport.tls import default_ssl_context
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
    with httpx.Client(timeout=30.0, verify=default_ssl_context()) as http:
        made = make_environment(tmp_path / "state", http=http)
        yield made
        made.env.db.dispose()


@pytest.fixture
def stop_signals_as_from_a_terminal() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP of this test process as a terminal's shell leaves them, whatever the test runner
    inherited: under ``nohup`` or ``make test &`` SIGHUP and SIGINT arrive ignored, a Dagster run in an earlier test
    may have changed SIGTERM, and every process a stop-signal test starts would inherit an ignored signal."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)
