"""Run the auth service in a background thread on a free loopback port (the demo's composition root)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from connectors.errors import ConfigurationError


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    app: FastAPI


def _bind_loopback(port: int = 0) -> socket.socket:
    """A listening loopback socket on ``port`` (0: a free one); a busy port is one clear configuration error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


@contextlib.contextmanager
def serve_in_thread(
    factory: Callable[[str], FastAPI], timeout_s: float = 30.0, *, port: int = 0
) -> Iterator[RunningApp]:
    """Bind first (so the app knows its own URL, e.g. for ``APP_BASE_URL``), then serve until the block ends."""
    sock = _bind_loopback(port)
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = factory(base_url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ehrsync-auth", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the auth service did not start; see the log above")
        time.sleep(0.02)
    try:
        yield RunningApp(base_url, app)
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
