"""Run the auth service under uvicorn (``ehrsync auth serve`` calls :func:`serve`)."""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from auth_service.app import create_app
from auth_service.core.config import Settings, load_settings
from auth_service.core.redaction import redacting_log_config

__all__ = ["log_config", "serve"]


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging config, with the redaction filter on every handler when enabled (SAL-38)."""
    base: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    return redacting_log_config(base) if settings.LOG_REDACTION_ENABLED else base


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Validate settings (exit with a message naming the bad variable), then serve until interrupted."""
    resolved = settings or load_settings()
    app = create_app(resolved)
    uvicorn.run(app, host=host, port=port, log_config=log_config(resolved), proxy_headers=False)
