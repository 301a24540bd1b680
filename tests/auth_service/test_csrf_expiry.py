"""The disconnect form's csrf token has its own expiry (``browser_seal.CSRF_MAX_AGE_S``, an hour), shorter than the
day-long connection cookie the form also needs: a form submitted later is refused with the bad-token page (400
``invalid_request``, logged at info: a form left open is ordinary), and opening the page again gives a token that
passes. A token sealed without an expiry (the earlier version's) is refused too.

Before, the token was the purpose alone, sealed and bound to the browser session: it passed for as long as the
session and the connection cookie lasted."""

from __future__ import annotations

import logging
import re
import time

import httpx
import pytest
from fastapi import Response

from auth_service.api import browser_seal
from auth_service.api.browser_seal import seal
from auth_service.api.connect_cookies import remember_connection
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from tests.auth_service.practice import live_clinic

SID = "s" * 43


def _form(browser: httpx.Client) -> dict[str, str]:
    page = browser.get("/connect/disconnect")
    assert page.status_code == 200 and "Yes, disconnect" in page.text, page.text
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))


def test_a_disconnect_form_older_than_its_tokens_expiry_is_refused_and_a_fresh_one_passes(
    make_settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with live_clinic(make_settings) as (server, ctx, conn_id):
        marker = Response()
        remember_connection(marker, ctx, SID, conn_id)
        cookie = marker.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        cookies = {SESSION_COOKIE: SID, CONNECTION_COOKIE: cookie}
        with httpx.Client(base_url=server.base_url, cookies=cookies, timeout=30) as browser:
            opened = _form(browser)
            assert opened["connection_id"] == conn_id
            no_expiry = seal(ctx, SID, "csrf:disconnect", "disconnect")  # as the earlier version sealed it
            refused = browser.post("/connect/disconnect", data={**opened, "csrf": no_expiry})
            assert refused.status_code == 400 and "invalid_request" in refused.text, refused.text

            later = time.time() + browser_seal.CSRF_MAX_AGE_S + 60  # the form left open past its expiry
            monkeypatch.setattr(browser_seal, "_now", lambda: later, raising=False)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="auth_service.api.browser_seal"):
                stale = browser.post("/connect/disconnect", data=opened)
            assert stale.status_code == 400 and "invalid_request" in stale.text, stale.text
            assert "more than an hour" in stale.text
            lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "auth_service.api.browser_seal"]
            assert lines == [
                (
                    logging.INFO,
                    "the disconnect form's csrf token was refused: expired (a form is good "
                    f"for {browser_seal.CSRF_MAX_AGE_S} s after its page was opened)",
                )
            ], lines
            assert "Disconnected" not in browser.get("/connect/done").text

            fresh = _form(browser)  # opened again, at the same later time
            done = browser.post("/connect/disconnect", data=fresh)
            assert done.status_code == 303 and done.headers["location"].startswith("/connect/done"), done.text
            assert "Disconnected" in browser.get("/connect/done").text
