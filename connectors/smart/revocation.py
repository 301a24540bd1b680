"""Token revocation (RFC 7009, SAL-34)."""

from __future__ import annotations

import logging

import httpx

from connectors.smart._http import post_form, raise_for_oauth_error
from connectors.smart.client_auth import ClientAuth

__all__ = ["revoke_token"]

logger = logging.getLogger(__name__)


def revoke_token(
    revocation_endpoint: str,
    *,
    http: httpx.Client,
    client_auth: ClientAuth,
    token: str,
    token_type_hint: str | None = None,
    audience: str | None = None,
) -> None:
    """Revoke one token; the server answers 200 even for unknown tokens, so 200 is all we need.

    ``audience`` is the ``aud`` for a private_key_jwt assertion (the token endpoint); defaults to the
    revocation endpoint itself.
    """
    form = {"token": token}
    if token_type_hint:
        form["token_type_hint"] = token_type_hint
    body, headers = client_auth.apply(form, audience or revocation_endpoint)
    response = post_form(http, revocation_endpoint, body, headers=headers, client_id=client_auth.client_id)
    raise_for_oauth_error(response, "revocation")
    logger.info("revoked a %s at %s", token_type_hint or "token", revocation_endpoint)
