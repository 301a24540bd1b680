"""A connect link sealed under a key this service no longer has (its old key removed from
INTEGRATIONS_TOKEN_ENC_KEYS_OLD while links of it were still out) is logged once per request, naming the key id: the
operator's to mend, so at warning, the first time in ``WARN_EVERY_S`` for that key id (its repeats at info). Never
the link, its tenant or the host app's user reference. Logged at the route, not in ``ConnectLinks.verify``: the error
page verifies the browser's link again for "Try again".

Before, the patient's page said the link was sealed with a key this service no longer has, and nothing was logged.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from auth_service.api.connect_cookies import LINK_COOKIE
from store.crypto import derive_kid
from tests.auth_service.conftest import AppHandle
from tests.auth_service.keyutil import enc_key

USER_REF = "host-user-4711"


def test_a_link_of_a_removed_key_is_logged_once_per_request_with_its_key_id(
    make_app: Callable[..., AppHandle], caplog: pytest.LogCaptureFixture
) -> None:
    before = make_app()
    api_key = before.bootstrap("tenant-with-a-name")
    r = before.client.post(
        "/api/integrations/connect-links", headers={"X-API-Key": api_key}, json={"user_ref": USER_REF}
    )
    link = parse_qs(urlsplit(r.json()["url"]).query)["link"][0]
    old = before.settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value()
    after = make_app(INTEGRATIONS_TOKEN_ENC_KEY=enc_key())  # rotated, the old key no longer listed
    kid = derive_kid(base64.b64decode(old))
    caplog.set_level(logging.INFO)
    requests = [
        ("GET", "/connect", {"link": link}, {}),
        ("GET", "/connect/results", {"link": link, "q": "a"}, {}),
        # the error page verifies the browser's link cookie again to offer "Try again": not logged again
        ("GET", "/api/integrations/smart/login", {"link": link, "provider": "smart"}, {LINK_COOKIE: link}),
        ("GET", "/connect/restart", {}, {LINK_COOKIE: link}),
    ]
    for n, (method, path, params, cookies) in enumerate(requests):
        caplog.clear()
        after.client.cookies.clear()
        for name, value in cookies.items():
            after.client.cookies.set(name, value)
        page = after.client.request(method, path, params=params)
        assert page.status_code in (200, 400) and "connect link" in page.text, (path, page.status_code)
        lines = [(r.levelno, r.getMessage()) for r in caplog.records if "connect link was refused" in r.getMessage()]
        assert len(lines) == 1, (path, lines)  # exactly one per request
        [(level, line)] = lines
        # at warning the first time; this key id's repeats at info (a forged link names any key id: key_warnings)
        assert level == (logging.WARNING if n == 0 else logging.INFO), (path, level)
        assert f"key id {kid!r}, which is not configured" in line and line.startswith("a connect link"), line
        assert not any(secret in line for secret in (link, USER_REF, "tenant-with-a-name")), line
    caplog.clear()  # a link that opens is not logged
    assert before.client.get("/connect", params={"link": link}).status_code == 200
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
