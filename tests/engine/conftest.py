"""Fixtures for the sync engine tests: a sandbox per test (faults and mutations are per-server state), a shared
HTTP client that records every request URL, and a fresh sync world (app DB, vault, landing, warehouse)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.transport.quota import QUOTAS
from connectors.transport.tls import default_ssl_context
from sandbox import SandboxConfig, SandboxServer
from tests.engine.helpers import SyncWorld, make_environment


class RequestLog:
    """URLs the engine requested, in order (tokens travel in headers, never here)."""

    def __init__(self) -> None:
        self.urls: list[httpx.URL] = []
        self.methods: list[str] = []
        self.bearer: list[bool] = []
        self.conditional: list[bool] = []  # did it carry If-None-Exist?

    def __call__(self, request: httpx.Request) -> None:
        self.urls.append(request.url)
        self.methods.append(request.method)
        self.bearer.append("authorization" in request.headers)
        self.conditional.append("if-none-exist" in request.headers)

    def paths(self, prefix: str, method: str = "GET") -> list[httpx.URL]:
        return [u for u, m in zip(self.urls, self.methods, strict=True) if u.path.startswith(prefix) and m == method]

    def with_token(self, prefix: str) -> list[bool]:
        """For each request under ``prefix``: did it carry an Authorization header?"""
        return [b for u, b in zip(self.urls, self.bearer, strict=True) if u.path.startswith(prefix)]

    def posts_conditional(self, prefix: str) -> list[bool]:
        """For each POST under ``prefix``: did it carry If-None-Exist?"""
        sent = zip(self.urls, self.methods, self.conditional, strict=True)
        return [c for u, m, c in sent if u.path.startswith(prefix) and m == "POST"]

    def clear(self) -> None:
        self.urls.clear()
        self.methods.clear()
        self.bearer.clear()
        self.conditional.clear()


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def http(request_log: RequestLog) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0, event_hooks={"request": [request_log]}, verify=default_ssl_context()) as client:
        yield client


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Start a sandbox with config overrides; every one started is stopped after the test."""
    started: list[SandboxServer] = []

    def start(**overrides: Any) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**{"patients": 2, "seed": 11, **overrides}))
        server.__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


@pytest.fixture
def sb(start_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    return start_sandbox()


@pytest.fixture
def world(tmp_path: Path, http: httpx.Client) -> SyncWorld:
    return make_environment(tmp_path / "world", http=http)


@pytest.fixture(params=["sqlite", "postgres"])
def slot_world(request: pytest.FixtureRequest, tmp_path: Path, http: httpx.Client) -> SyncWorld:
    """A world on each app database (SQLite, and a throwaway PostgreSQL): locks differ between them."""
    url = None if request.param == "sqlite" else request.getfixturevalue("migrated_postgres_url")
    return make_environment(tmp_path / "world", http=http, app_db_url=url)


@pytest.fixture(scope="module")
def module_sandbox() -> Iterator[SandboxServer]:
    """One sandbox per test module for tests that neither mutate data nor need start-up settings."""
    with SandboxServer(SandboxConfig(patients=2, seed=11)) as server:
        yield server


@pytest.fixture
def shared_sb(module_sandbox: SandboxServer) -> SandboxServer:
    """The module's sandbox with no faults armed (a test's leftover faults never leak into the next)."""
    module_sandbox.admin.clear_faults()
    return module_sandbox


@pytest.fixture(autouse=True)
def _forget_quotas() -> Iterator[None]:
    """The EHR quota holds are per process and keyed by origin: a hold (a day long in the quota tests) must not
    reach the next test, whose sandbox may get this one's port."""
    QUOTAS.clear()
    yield
    QUOTAS.clear()


@pytest.fixture
def api(world: SyncWorld, tmp_path: Path) -> Iterator[Any]:
    """The auth service's real app over ``world``'s app database, for a person's note retry (``retry_api``)."""
    from tests.engine.retry_api import notes_api  # the FastAPI app: imported only by the tests asking for it

    with notes_api(world, tmp_path / "app_state") as handle:
        yield handle
