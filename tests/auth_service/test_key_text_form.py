"""The vault key's text form never matters: the cipher and every HMAC key (page cursors, the earlier-format connect
links, connection cookies and csrf tokens) derive from the key's bytes, parsed once (``store.crypto.VaultKeys``).

Before, the cipher stripped the key text but the HMAC keys were the active key's text exactly as set: a key set
with a trailing newline (a Kubernetes secret mounted from a file) signed cursors no old key listed after the
rotation matched (the host app's next page was 400), and re-setting the same key without the newline broke every
earlier-format link and cookie. Values an earlier version signed under the text as set still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import pytest

from auth_service.api.browser_seal import owner_of
from auth_service.api.deps import CONNECTION_COOKIE, SESSION_COOKIE
from auth_service.core.links import LinkSigner
from store import TokenCipher, rotate_keys
from tests.auth_service import test_resources_api as resources_api
from tests.auth_service.conftest import AppHandle
from tests.auth_service.keyutil import enc_key
from tests.auth_service.practice import add_connection
from tests.auth_service.test_resources_api import OBSERVATIONS, PATH, World

world = resources_api.world  # the fixture: a DuckDB and a PostgreSQL warehouse with synced rows


def _as_set(key: str, form: str) -> str:
    """The key's text as an operator may set it: a mounted secret's newline, the URL-safe alphabet, spaces."""
    raw = base64.b64decode(key)
    return {
        "newline": f"{key}\n",
        "crlf, url-safe": base64.urlsafe_b64encode(raw).decode() + "\r\n",
        "spaces": f"  {key} ",
    }[form]


@pytest.mark.parametrize("form", ["newline", "crlf, url-safe"])
def test_a_cursor_of_a_key_set_with_a_trailing_newline_verifies_after_its_rotation(
    world: World, make_app: Callable[..., AppHandle], form: str
) -> None:
    old = enc_key()
    before = make_app(WAREHOUSE_URL=world.target, INTEGRATIONS_TOKEN_ENC_KEY=_as_set(old, form))
    params = {"connectionId": world.conn_a, "resourceType": "Observation", "limit": 5}
    first = before.client.get(PATH, params=params, headers={"X-API-Key": world.key_a}).json()
    ids = [item["id"] for item in first["items"]]
    keys = {"INTEGRATIONS_TOKEN_ENC_KEY": enc_key(), "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"old:{old}"}
    rotate_keys(before.app.state.ctx.db, TokenCipher.from_env(keys))  # what `ehrsync keys rotate` does
    rotated = make_app(WAREHOUSE_URL=world.target, **keys)
    cursor = first["nextCursor"]
    while cursor is not None:
        r = rotated.client.get(PATH, params={**params, "cursor": cursor}, headers={"X-API-Key": world.key_a})
        assert r.status_code == 200, r.text
        ids += [item["id"] for item in r.json()["items"]]
        cursor = r.json()["nextCursor"]
    assert ids == [f"obs{i:02d}" for i in range(OBSERVATIONS)]


@pytest.mark.parametrize("form", ["newline", "spaces"])
def test_earlier_format_links_and_cookies_verify_whatever_the_key_text(
    make_app: Callable[..., AppHandle], form: str
) -> None:
    """Signed by an earlier version under the key set as it is now, or as it was before (without the newline):
    the earlier-format link, connection cookie and csrf token all pass with the key set with surrounding space."""
    key = enc_key()
    handle = make_app(INTEGRATIONS_TOKEN_ENC_KEY=_as_set(key, form))
    handle.bootstrap("t1")
    with handle.app.state.ctx.db.session() as session, session.begin():
        conn_id = add_connection(session)
    for n, text in enumerate([key, _as_set(key, form)]):  # what the earlier version keyed its HMACs on
        secret = text.encode()
        link = LinkSigner(secret, "connect-link").sign("t1", "user", ttl_seconds=600)
        assert handle.client.get("/connect", params={"link": link}).status_code == 200, n
        sid = f"browser-{n}-" + "s" * 30
        marker = LinkSigner(secret, "browser-session").sign(conn_id, owner_of(sid), ttl_seconds=600)
        handle.client.cookies.clear()
        handle.client.cookies.set(SESSION_COOKIE, sid)
        handle.client.cookies.set(CONNECTION_COOKIE, marker)
        assert handle.client.get("/connect/done").status_code == 200, n
        csrf = hmac.new(secret, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()
        # confirm="" asks again (303 to the page) once the token passed; a refused token is 400
        r = handle.client.post("/connect/disconnect", data={"connection_id": conn_id, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/connect/disconnect", (n, r.text)
