"""A patient's cookie that does not open is logged once, with its cause, so an operator can tell why a patient saw
"no connection was made in this browser": an old key removed from INTEGRATIONS_TOKEN_ENC_KEYS_OLD too early, a
browser whose session ended, an expired or altered cookie. The line never holds the cookie, the session id or
the connection id; a browser that carries no cookie at all is not logged. Before, every one of these was silent.

Only the cause the operator must mend is a warning (the key id not configured); a cookie's ordinary causes (no
session any more, a cookie of an earlier session, expired, malformed) are info, so they do not drown it. A refused
disconnect form token is a warning (the connection cookie opened, so the token is forged or foreign).
"""

from __future__ import annotations

import base64
import json
import logging
import time

import httpx
import pytest
from fastapi import FastAPI

from auth_service.api.browser_seal import csrf_token, seal
from auth_service.api.connect_cookies import CHOICE_COOKIE
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.app import create_app
from store import TokenCipher, rotate_keys
from store.crypto import derive_kid
from store.models import Connection
from tests.auth_service.conftest import LiveServer
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.keyutil import enc_key
from tests.auth_service.test_patient_cookie_rotation import _form, _sign_in

_LOGGER = "auth_service.api.browser_seal"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == _LOGGER]
    caplog.clear()
    return lines


def _done(base_url: str, cookies: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=base_url, cookies=cookies, timeout=30) as browser:
        return browser.get("/connect/done")


def test_each_cookie_that_does_not_open_is_logged_with_its_cause(
    make_settings, sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_LOGGER)
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
        another = "bound to another browser session, or altered"
        cases = [  # each an ordinary browser (or one altering its own cookie): info, not warning
            (another, {**cookies, SESSION_COOKIE: "x" * 43}),
            (another, {**cookies, CONNECTION_COOKIE: csrf_token(svc.ctx, sid)}),  # this session's, for the form
            ("no sign-in session any more", {CONNECTION_COOKIE: cookies[CONNECTION_COOKIE]}),
            ("malformed (not a sealed value", {**cookies, CONNECTION_COOKIE: "v1.abc.def.ghi"}),
            ("expired", {**cookies, CONNECTION_COOKIE: expired}),
        ]
        assert _done(svc.base_url, cookies).status_code == 200 and not _refusals(caplog)  # it opens: nothing logged
        assert _done(svc.base_url, {}).status_code == 404 and not _refusals(caplog)  # no cookie at all: silent
        for cause, sent in cases:
            assert _done(svc.base_url, sent).status_code == 404
            [(level, line)] = _refusals(caplog)
            assert line.startswith(f"the {CONNECTION_COOKIE} cookie") and cause in line, (cause, line)
            assert level == logging.INFO, (cause, logging.getLevelName(level))
            assert not any(secret in line for secret in (conn_id, sid, sent[CONNECTION_COOKIE])), line
        # the choice cookie, read once the connection opened: its own line (here the connection cookie's value)
        assert _done(svc.base_url, {**cookies, CHOICE_COOKIE: cookies[CONNECTION_COOKIE]}).status_code == 200
        [(level, line)] = _refusals(caplog)
        assert line.startswith(f"the {CHOICE_COOKIE} cookie") and another in line and level == logging.INFO, line
        # a disconnect form token that does not pass where the connection cookie opened: a warning
        with httpx.Client(base_url=svc.base_url, cookies=cookies, timeout=30) as browser:
            form = _form(browser.get("/connect/disconnect"))
            _refusals(caplog)  # the page itself logs nothing worth asserting here
            foreign = csrf_token(svc.ctx, "y" * 43)  # another session's form token
            forged = browser.post("/connect/disconnect", data={**form, "csrf": foreign})
        assert forged.status_code == 400 and "invalid_request" in forged.text, forged.text
        [(level, line)] = _refusals(caplog)
        assert line.startswith("the disconnect form's csrf token") and another in line, line
        assert level == logging.WARNING and not any(s in line for s in (conn_id, sid, foreign)), line
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
    [(level, line)] = _refusals(caplog)  # the one cause the operator must mend: a warning
    kid = derive_kid(base64.b64decode(old))
    assert f"sealed under key id {kid!r}, which is not configured" in line and level == logging.WARNING, line
    assert not any(secret in line for secret in (conn_id, sid, cookies[CONNECTION_COOKIE])), line
