"""Token-endpoint client authentication: public, client_secret_basic/post, private_key_jwt (SAL-27..31)."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Collection, Mapping
from urllib.parse import unquote

from sandbox.oauth.assertion import ASSERTION_TYPE, SKEW_S, AssertionRejected, verify_assertion
from sandbox.oauth.errors import OAuthFailure
from sandbox.oauth.state import AuthState, ClientRegistration

_BASIC_CHALLENGE = 'Basic realm="ehrsync-sandbox"'


def _bad_client(description: str, basic: bool = False) -> OAuthFailure:
    return OAuthFailure("invalid_client", description, 401, _BASIC_CHALLENGE if basic else None)


def authenticate_client(
    form: Mapping[str, str],
    authorization: str | None,
    state: AuthState,
    token_url: str,
    accept_secret_post: bool,
    now: float,
    *,
    exp_leeway_s: float = SKEW_S,
    assertion_algs: Collection[str] = ("RS384", "ES384"),
) -> ClientRegistration:
    """The registered client making this request, or OAuthFailure(invalid_client)."""
    if authorization and authorization.lower().startswith("basic "):
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            cid, _, secret = raw.partition(":")
            cid, secret = unquote(cid.replace("+", " ")), unquote(secret.replace("+", " "))
        except (binascii.Error, UnicodeDecodeError):
            raise _bad_client("malformed Basic credentials", basic=True) from None
        client = state.clients.get(cid)
        if (
            client is None
            or client.client_secret is None
            or not secrets.compare_digest(client.client_secret.encode(), secret.encode())
        ):
            raise _bad_client("client authentication failed", basic=True)
        return client
    if form.get("client_assertion") or form.get("client_assertion_type"):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _bad_client("unsupported client_assertion_type")
        try:
            cid = verify_assertion(
                form.get("client_assertion", ""), token_url, state, now, leeway_s=exp_leeway_s, algs=assertion_algs
            )
        except AssertionRejected as exc:
            raise _bad_client(str(exc)) from None
        if form.get("client_id") not in (None, "", cid):
            raise _bad_client("client_id does not match the assertion")
        return state.clients[cid]
    cid = form.get("client_id", "")
    client = state.clients.get(cid)
    if client is None:
        raise _bad_client("unknown client")
    if form.get("client_secret") is not None:
        if not accept_secret_post or client.client_secret is None:
            raise _bad_client("client_secret_post is not accepted; use client_secret_basic", basic=True)
        if not secrets.compare_digest(client.client_secret.encode(), str(form["client_secret"]).encode()):
            raise _bad_client("client authentication failed", basic=True)
        return client
    if client.client_type != "public":
        raise _bad_client("confidential clients must authenticate", basic=client.client_secret is not None)
    return client
