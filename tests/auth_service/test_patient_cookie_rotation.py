"""A vault key rotation keeps the patient's pages: the browser that connected still finds its connection.

The connection cookie is sealed with the vault cipher, so it opens under ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` as
the connect links and the choice cookie do. Before, it was HMAC-signed with the active key alone: after a
rotation every patient who had connected in the last day got "not_connected" on the done and disconnect pages.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from auth_service.app import create_app
from store import TokenCipher, rotate_keys
from tests.auth_service.conftest import LiveServer
from tests.auth_service.ehr import patient_ids, running_service, sandbox_admin, smart_practice
from tests.auth_service.keyutil import enc_key


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
