"""The "key id not configured" refusal stays the operator's warning, but bounded: the key id is read from the value
before anything is authenticated, so anyone can send a forged cookie or connect link naming any key id, and at
warning on every request that flooded the level the operator watches. Now each key id is a warning at most once in
``WARN_EVERY_S`` (10 minutes) per app instance, and at most ``MAX_WARNED_KEY_IDS`` key ids at once; the repeats are
still logged, at info. Before, every forged request was a warning."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.app import create_app
from auth_service.core.key_warnings import MAX_WARNED_KEY_IDS
from tests.auth_service.conftest import LiveServer

_LOGGER = "auth_service.api.browser_seal"
SID = "s" * 43


def _levels(caplog: pytest.LogCaptureFixture, cause: str) -> list[int]:
    levels = [r.levelno for r in caplog.records if r.name == _LOGGER and cause in r.getMessage()]
    caplog.clear()
    return levels


def test_a_forged_value_naming_a_key_id_not_configured_warns_once_per_key_id_then_logs_at_info(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    def factory(base_url: str) -> FastAPI:
        return create_app(make_settings(APP_BASE_URL=base_url))

    caplog.set_level(logging.INFO, logger=_LOGGER)
    with (
        LiveServer(factory) as server,
        httpx.Client(base_url=server.base_url, cookies={SESSION_COOKIE: SID}, timeout=30) as browser,
    ):

        def forged_cookie(kid: str) -> None:
            browser.cookies.set(CONNECTION_COOKIE, f"v1.{kid}.AAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            assert browser.get("/connect/done").status_code == 404

        for _ in range(5):
            forged_cookie("gone-key")
        assert _levels(caplog, "'gone-key', which is not configured") == [logging.WARNING] + [logging.INFO] * 4

        for _ in range(3):  # a connect link naming the same key id: info too; another key id: its own warning
            assert browser.get("/connect", params={"link": "v1.gone-key.AAAAAAAAAAAAAAAAAAAA"}).status_code == 400
        assert _levels(caplog, "'gone-key', which is not configured") == [logging.INFO] * 3
        forged_cookie("other-key")
        forged_cookie("other-key")
        assert _levels(caplog, "'other-key', which is not configured") == [logging.WARNING, logging.INFO]

        for n in range(3 * MAX_WARNED_KEY_IDS):  # a forger varying the key id: the warnings stay bounded
            forged_cookie(f"k{n}")
        levels = _levels(caplog, "which is not configured")
        assert len(levels) == 3 * MAX_WARNED_KEY_IDS
        assert levels.count(logging.WARNING) == MAX_WARNED_KEY_IDS - 2, "two key ids were already warned about"
