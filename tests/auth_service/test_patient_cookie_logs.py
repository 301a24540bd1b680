"""A patient's cookie that does not open is logged once, with its cause, so an operator can tell why a patient saw
"no connection was made in this browser": an old key removed from INTEGRATIONS_TOKEN_ENC_KEYS_OLD too early, a
browser whose session ended, an expired or altered cookie. The line never holds the cookie, the session id or
the connection id; a browser that carries no cookie at all is not logged. Before, every one of these was silent.
"""

from __future__ import annotations

import base64
import json
import logging
import time

import httpx
import pytest
from fastapi import FastAPI

from auth_service.api.browser_seal import seal
from auth_service.api.connect_cookies import CHOICE_COOKIE
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.app import create_app
from store import TokenCipher, rotate_keys
from store.crypto import derive_kid
from store.models import Connection
from tests.auth_service.conftest import LiveServer
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.keyutil import enc_key
from tests.auth_service.test_patient_cookie_rotation import _sign_in

_LOGGER = "auth_service.api.browser_seal"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == _LOGGER and r.levelno == logging.WARNING]
    caplog.clear()
    return lines


def _done(base_url: str, cookies: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=base_url, cookies=cookies, timeout=30) as browser:
        return browser.get("/connect/done")


def test_each_cookie_that_does_not_open_is_logged_with_its_cause(
    make_settings, sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=_LOGGER)
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "log-app")) as svc:
        sandbox_admin(
            sandbox, "clients", {"client_id": "log-app", "client_type": "public", "redirect_uris": [svc.redirect_uri]}
        )
        sandbox_admin(sandbox, "preapprove", {"client_id": "log-app", "patient_id": pid})
        with httpx.Client(timeout=30, follow_redirects=False) as browser:
            _sign_in(browser, svc.base_url)
            cookies = dict(browser.cookies)
        with svc.ctx.db.session() as session:
            [conn_id] = [c.id for c in session.query(Connection).all()]
        sid = cookies[SESSION_COOKIE]
        expired = seal(svc.ctx, sid, "connection-marker", json.dumps({"c": conn_id, "exp": int(time.time()) - 5}))
        cases = {
            "bound to another browser session, or altered": {**cookies, SESSION_COOKIE: "x" * 43},
            "no sign-in session any more": {CONNECTION_COOKIE: cookies[CONNECTION_COOKIE]},
            "malformed (not a sealed value": {**cookies, CONNECTION_COOKIE: "v1.abc.def.ghi"},
            "expired": {**cookies, CONNECTION_COOKIE: expired},
        }
        assert _done(svc.base_url, cookies).status_code == 200 and not _refusals(caplog)  # it opens: nothing logged
        assert _done(svc.base_url, {}).status_code == 404 and not _refusals(caplog)  # no cookie at all: silent
        for cause, sent in cases.items():
            assert _done(svc.base_url, sent).status_code == 404
            [line] = _refusals(caplog)
            assert line.startswith(f"the {CONNECTION_COOKIE} cookie") and cause in line, (cause, line)
            assert not any(secret in line for secret in (conn_id, sid, sent[CONNECTION_COOKIE])), line
        # the choice cookie, read once the connection opened: its own line (here the connection cookie's value)
        assert _done(svc.base_url, {**cookies, CHOICE_COOKIE: cookies[CONNECTION_COOKIE]}).status_code == 200
        [line] = _refusals(caplog)
        assert line.startswith(f"the {CHOICE_COOKIE} cookie") and "bound to another browser session" in line, line
        old = svc.ctx.settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value()
    # `ehrsync keys rotate`, then the old key removed from INTEGRATIONS_TOKEN_ENC_KEYS_OLD within the cookie's day
    new = enc_key()
    rotate_keys(
        svc.ctx.db,
        TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": new, "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"o:{old}"}),
    )

    def removed_too_early(base_url: str) -> FastAPI:
        settings = make_settings(
            APP_BASE_URL=base_url, SMART_ISSUER_ALLOWLIST=sandbox.fhir_base, INTEGRATIONS_TOKEN_ENC_KEY=new
        )
        return create_app(settings)

    with LiveServer(removed_too_early) as server:
        page = _done(server.base_url, cookies)
        assert page.status_code == 404 and "not_connected" in page.text
    [line] = _refusals(caplog)
    kid = derive_kid(base64.b64decode(old))
    assert f"sealed under key id {kid!r}, which is not configured" in line, line
    assert not any(secret in line for secret in (conn_id, sid, cookies[CONNECTION_COOKIE])), line
