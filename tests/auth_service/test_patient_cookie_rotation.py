"""A vault key rotation keeps the patient's pages: the browser that connected still finds its connection, and a
disconnect form opened before the rotation is still accepted after it.

The connection cookie is sealed with the vault cipher, so it opens under ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` as
the connect links and the choice cookie do. Before, it was HMAC-signed with the active key alone: after a
rotation every patient who had connected in the last day got "not_connected" on the done and disconnect pages.
The disconnect form's csrf token is sealed too (bound to the browser session and to the disconnect); before, it was
an HMAC under the active key alone, and a patient who submitted the form after a rotation got ``invalid_request``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import httpx
from fastapi import FastAPI, Response

from auth_service.api.browser_seal import seal
from auth_service.api.connect_cookies import CHOICE_COOKIE, ConnectChoice, remember_choice, remember_connection
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.app import create_app
from store import TokenCipher, rotate_keys
from tests.auth_service.conftest import LiveServer
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.keyutil import enc_key
from tests.auth_service.practice import live_clinic


def _sign_in(browser: httpx.Client, base_url: str) -> None:
    """The standalone launch a pre-approved patient makes, in this browser (its cookies kept)."""
    r = browser.get(f"{base_url}/api/integrations/smart/login?tenant=t1&provider=smart")
    assert r.status_code == 302, r.text
    r = browser.get(r.headers["location"])
    assert r.status_code in (302, 303), r.text
    r = browser.get(r.headers["location"])
    assert r.status_code == 303 and r.headers["location"] == "/connect/done", r.text


def test_connection_cookie_survives_a_key_rotation(make_settings, sandbox) -> None:
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "rot-app")) as svc:
        client = {"client_id": "rot-app", "client_type": "public", "redirect_uris": [svc.redirect_uri]}
        sandbox_admin(sandbox, "clients", client)
        sandbox_admin(sandbox, "preapprove", {"client_id": "rot-app", "patient_id": pid})
        old = svc.ctx.settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value()
        with httpx.Client(timeout=30, follow_redirects=False) as browser:
            _sign_in(browser, svc.base_url)
            assert browser.get(f"{svc.base_url}/connect/done").status_code == 200
            cookies = dict(browser.cookies)
    keys = {"INTEGRATIONS_TOKEN_ENC_KEY": enc_key(), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"old:{old}"}
    rotate_keys(svc.ctx.db, TokenCipher.from_env(keys))  # what `ehrsync keys rotate` does

    def rotated(base_url: str) -> FastAPI:
        return create_app(make_settings(APP_BASE_URL=base_url, SMART_ISSUER_ALLOWLIST=sandbox.fhir_base, **keys))

    with LiveServer(rotated) as server, httpx.Client(base_url=server.base_url, cookies=cookies, timeout=30) as browser:
        done = browser.get("/connect/done")
        assert done.status_code == 200, done.text
        ask = browser.get("/connect/disconnect")
        assert ask.status_code == 200 and "Yes, disconnect" in ask.text, ask.text


def test_the_connection_cookie_opens_only_for_its_browser_and_purpose(make_settings) -> None:
    """Sealed, the marker still names a connection only for the session it was made in, only until it expires,
    and no other sealed value of the patient pages (the choice cookie, a connect link) passes for it."""

    with live_clinic(make_settings) as (server, ctx, conn_id):
        mine, other = "m" * 43, "o" * 43
        marker, choice = Response(), Response()
        remember_connection(marker, ctx, mine, conn_id)
        remember_choice(choice, ctx, mine, ConnectChoice("t1", "smart", None, None))
        owner = hashlib.sha256(mine.encode()).hexdigest()
        expired = json.dumps({"c": conn_id, "exp": int(time.time()) - 5})
        cases = {
            "this browser": (mine, _set_cookie(marker, CONNECTION_COOKIE), 200),
            "another browser": (other, _set_cookie(marker, CONNECTION_COOKIE), 404),
            "expired": (
                mine,
                ctx.cipher.encrypt(expired, tenant_id="", owner_id=owner, field="connection-marker"),
                404,
            ),
            "choice cookie": (mine, _set_cookie(choice, CHOICE_COOKIE), 404),
            "connect link": (mine, ctx.links.sign(conn_id, owner, 600), 404),
        }
        for name, (sid, value, status) in cases.items():
            with httpx.Client(base_url=server.base_url, cookies={SESSION_COOKIE: sid, CONNECTION_COOKIE: value}) as b:
                for page in ("/connect/done", "/connect/disconnect"):
                    r = b.get(page)
                    assert r.status_code == status, (name, page, r.status_code, r.text)
                    assert status == 200 or "not_connected" in r.text, (name, page, r.text)


def _set_cookie(response: Response, name: str) -> str:
    """The value the response sets for cookie ``name``."""
    for header in response.headers.getlist("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"{name} was not set")


def _form(page: httpx.Response) -> dict[str, str]:
    """The hidden fields of the disconnect page's form, as the browser posts them."""
    assert page.status_code == 200 and "Yes, disconnect" in page.text, page.text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    assert set(fields) == {"connection_id", "csrf", "confirm"}, fields
    return fields


def test_disconnect_form_opened_before_a_key_rotation_is_accepted_after_it(make_settings, sandbox) -> None:
    """Opened in two browsers before the rotation (the second sign-in renews the same connection), submitted
    after it: the browser's own form disconnects; a token of the other browser, or a value sealed in this browser's
    session for another purpose, does not pass for the form's token."""
    pid = patient_ids(sandbox)[0]
    with running_service(make_settings, sandbox, smart_practice(sandbox, "rot-csrf")) as svc:
        client = {"client_id": "rot-csrf", "client_type": "public", "redirect_uris": [svc.redirect_uri]}
        sandbox_admin(sandbox, "clients", client)
        old = svc.ctx.settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value()
        opened = []
        for _ in range(2):
            sandbox_admin(sandbox, "preapprove", {"client_id": "rot-csrf", "patient_id": pid})
            with httpx.Client(timeout=30, follow_redirects=False) as browser:
                _sign_in(browser, svc.base_url)
                opened.append((dict(browser.cookies), _form(browser.get(f"{svc.base_url}/connect/disconnect"))))
    (mine, form), (_, their_form) = opened
    assert form["connection_id"] == their_form["connection_id"]  # one connection, renewed by the second sign-in
    keys = {"INTEGRATIONS_TOKEN_ENC_KEY": enc_key(), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"old:{old}"}
    rotate_keys(svc.ctx.db, TokenCipher.from_env(keys))  # what `ehrsync keys rotate` does

    def rotated(base_url: str) -> FastAPI:
        return create_app(make_settings(APP_BASE_URL=base_url, SMART_ISSUER_ALLOWLIST=sandbox.fhir_base, **keys))

    with LiveServer(rotated) as server, httpx.Client(base_url=server.base_url, cookies=mine, timeout=30) as browser:
        # the other browser's token; this session's, sealed for another purpose (as the connection cookie is)
        ctx = server.app.state.ctx
        for forged in (their_form["csrf"], seal(ctx, mine[SESSION_COOKIE], "connection-marker", "disconnect")):
            refused = browser.post("/connect/disconnect", data={**form, "csrf": forged})
            assert refused.status_code == 400 and "invalid_request" in refused.text, refused.text
        assert "Disconnected" not in browser.get("/connect/done").text
        done = browser.post("/connect/disconnect", data=form)
        assert done.status_code == 303 and done.headers["location"].startswith("/connect/done"), done.text
        assert "Disconnected" in browser.get("/connect/done").text
