"""Auth service fixtures: settings on a fresh SQLite file, the app, tenants with API keys, a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from auth_service.app import create_app
from auth_service.core.config import Settings, load_settings
from auth_service.services.tenants import bootstrap_tenant
from auth_service.tenants.settings import TenantSeed
from sandbox import SandboxServer
from tests.auth_service.keyutil import enc_key, service_rsa_pem
from tests.fixtures.app_db import copy_migrated_sqlite

if TYPE_CHECKING:  # sync_stack imports ehr.py, which imports this module
    from tests.auth_service.sync_stack import Stack


class NoNetwork(httpx.BaseTransport):
    """Records outbound requests and fails them as an unreachable host would (no DNS, no socket)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(str(request.url))
        raise httpx.ConnectError("network disabled in this test", request=request)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        copy_migrated_sqlite(tmp_path / "app.db")
        values: dict[str, Any] = {
            "INTEGRATIONS_TOKEN_ENC_KEY": enc_key(),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            # the warehouse, landing zone and attachments of a purge: never the checkout's default var/demo
            "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
            "APP_BASE_URL": "http://testserver",
            "SMART_ISSUER_ALLOWLIST": "https://ehr.example/fhir",
            "EHR_JWT_PRIVATE_KEY": service_rsa_pem(),
            "EHR_JWT_KEY_ID": "kid-1",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@dataclass
class AppHandle:
    app: FastAPI
    client: TestClient
    settings: Settings

    def bootstrap(self, tenant_id: str, practice: dict[str, Any] | None = None) -> str:
        ctx = self.app.state.ctx
        seed = TenantSeed.model_validate(
            {"id": tenant_id, "name": f"Practice {tenant_id}", "practice_settings": practice or {}}
        )
        with ctx.db.session() as session, session.begin():
            return bootstrap_tenant(session, seed, ctx.cipher).api_key


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., AppHandle]]:
    clients: list[TestClient] = []

    def make(http: httpx.Client | None = None, **overrides: Any) -> AppHandle:
        settings = make_settings(**overrides)
        app = create_app(settings, http=http)
        client = TestClient(app, follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return AppHandle(app, client, settings)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


class LiveServer:
    """uvicorn in a background thread on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, app_factory: Callable[[str], FastAPI], log_config: dict[str, Any] | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app = app_factory(self.base_url)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=log_config, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: self.server.run(sockets=[self.sock]), daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("auth service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def stack(sandbox_session: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The sync API's stack (auth service + ``dagster dev``), one per test module that asks for it."""
    from tests.auth_service.sync_stack import running_stack

    with running_stack(sandbox_session, tmp_path_factory.mktemp("sync_api")) as started:
        yield started


@pytest.fixture(scope="module")
def patient_connection(stack: Stack, sandbox_session: SandboxServer) -> str:
    """SAL-07: a patient connects through the stack's auth service (standalone launch, pre-approved at the sandbox)."""
    from tests.auth_service.sync_stack import connect_patient

    return connect_patient(stack, sandbox_session)
