"""Fixtures of the connector tests that talk to the shared sandbox EHR."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.scripted import Scripted, scripted_server


@pytest.fixture
def ehr(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    """The shared sandbox; faults and settings are reset after the test too, not only before the next."""
    yield sandbox
    sandbox.admin.clear_faults()
    sandbox.admin.reset_settings()


@pytest.fixture
def backend(ehr: SandboxServer) -> BackendClient:
    """A SMART Backend Services client registered at the sandbox (``system/*.rs``)."""
    return BackendClient(ehr)


@pytest.fixture
def server() -> Iterator[tuple[str, Scripted]]:
    """A scripted HTTP server on 127.0.0.1:0 (``tests/connectors/scripted.py``): faults only a socket can show."""
    with scripted_server() as running:
        yield running
