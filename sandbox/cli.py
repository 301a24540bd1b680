"""Entry points the ``ehrsync`` CLI wires up: ``run_server`` (blocking) and ``mutate`` (over HTTP)."""

from __future__ import annotations

import logging
from typing import Any

from sandbox.admin_client import SandboxAdmin


def run_server(
    patients: int = 25,
    port: int = 8081,
    seed: int = 7,
    host: str = "127.0.0.1",
    auto_approve: bool = False,
    **settings: Any,
) -> None:
    """Serve the sandbox until interrupted. Plain HTTP, so only loopback hosts are accepted (SAL-37).

    Extra keyword arguments are any other ``SandboxConfig`` fields (e.g. ``refresh_mode="none"``). The server's
    imports (FastAPI, uvicorn) are here: ``mutate`` needs only an HTTP client.
    """
    import uvicorn

    from sandbox.app import create_app, state_of
    from sandbox.config import SandboxConfig
    from sandbox.server import bind_socket

    cfg = SandboxConfig(patients=patients, port=port, seed=seed, host=host, auto_approve=auto_approve, **settings)
    sock = bind_socket(cfg.host, cfg.port)
    bound_host, bound_port = sock.getsockname()[:2]
    app = create_app(cfg)
    state_of(app).base_url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="info", lifespan="off", date_header=False, timeout_graceful_shutdown=5)
    )
    # uvicorn does not announce pre-bound sockets; its configured logger reaches the console, ours may not.
    logging.getLogger("uvicorn.error").info(
        "sandbox EHR running at %s/fhir (%d patients, seed %d)", state_of(app).base_url, patients, seed
    )
    try:
        server.run(sockets=[sock])
    finally:
        state_of(app).close()


def mutate(
    url: str, create: int = 0, update: int = 0, delete: int = 0, seed: int | None = None
) -> dict[str, list[str]]:
    """Create, update and delete resources of a running sandbox now; returns the changed references."""
    admin = SandboxAdmin(url.rstrip("/").removesuffix("/fhir"))
    try:
        return admin.mutate(create=create, update=update, delete=delete, seed=seed)
    finally:
        admin.close()
