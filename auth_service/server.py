"""Run the auth service under uvicorn (``ehrsync auth serve`` calls :func:`serve`)."""

from __future__ import annotations

import copy
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from auth_service.core.config import Settings, load_settings
from auth_service.core.redaction import redacting_log_config
from connectors.errors import ConfigurationError

__all__ = ["log_config", "serve"]

logger = logging.getLogger(__name__)


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging config, with the redaction filter on every handler when enabled (SAL-38)."""
    base: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    return redacting_log_config(base) if settings.LOG_REDACTION_ENABLED else base


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Validate settings (exit with a message naming the bad variable), then serve until interrupted."""
    resolved = settings or load_settings()
    sock = _bind(host, port)  # before any start-up work: a busy port is one clear error, not a log line
    try:
        from auth_service.app import create_app  # the app's routes and services: only once settings and port are good

        app = create_app(resolved)
        config = uvicorn.Config(app, log_config=log_config(resolved), proxy_headers=False)
        bound_host, bound_port = sock.getsockname()[:2]
        logger.info("auth service listening on http://%s:%d", bound_host, bound_port)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
