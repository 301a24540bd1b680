"""``SandboxServer``: uvicorn in a background thread on a loopback port chosen by the OS."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from sandbox.admin_client import SandboxAdmin
from sandbox.app import create_app, state_of
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.state import SandboxState

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts so the real port is known (port 0 = any free port)."""
    if host not in LOOPBACK:
        raise SandboxError(f"the sandbox speaks plain HTTP and binds loopback only (SAL-37), not {host!r}")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1" if host == "localhost" else host, port))
        sock.listen(2048)  # connections made before uvicorn starts accepting wait in the backlog
    except OSError as exc:  # a busy port is named with its address, not as a bare errno
        sock.close()
        raise SandboxError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class SandboxServer:
    """Context manager running one sandbox; ``base_url``, ``fhir_base`` and ``admin`` once started."""

    def __init__(self, cfg: SandboxConfig | None = None) -> None:
        self.cfg = cfg or SandboxConfig()
        self.app = create_app(self.cfg)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._admin: SandboxAdmin | None = None
        self.base_url = ""

    @property
    def fhir_base(self) -> str:
        return self.base_url + "/fhir"

    @property
    def admin(self) -> SandboxAdmin:
        if self._admin is None:
            raise SandboxError("sandbox is not started")
        return self._admin

    @property
    def state(self) -> SandboxState:
        """In-process state (data store, auth, faults): for tests that need to look inside."""
        return state_of(self.app)

    def start(self, timeout_s: float = 10.0) -> SandboxServer:
        sock = bind_socket(self.cfg.host, self.cfg.port)
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        state_of(self.app).base_url = self.base_url
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            date_header=False,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"sandbox-{port}"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SandboxError("sandbox did not start")
            time.sleep(0.01)
        self._admin = SandboxAdmin(self.base_url)
        log.info("sandbox listening on %s (%d patients)", self.base_url, self.cfg.patients)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._admin is not None:
            self._admin.close()
        state_of(self.app).close()
        self._server = self._thread = self._admin = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
