"""The bearer token as an ``httpx.Auth`` flow (as Authlib's OAuth2 client does it): attach the token of a
:class:`~connectors.tokens.TokenSource`; on a 401, ask it once for a new token and send once more.

The flow never decides where tokens live or how they are refreshed (the vault does, under a lock), and it
never logs a token. One flow object serves one logical request, redirects included, so a request refreshes
at most once; a second 401 is returned to the caller, which raises FhirUnauthorizedError.
"""

from __future__ import annotations

import logging
from collections.abc import Generator

import httpx

from connectors.http.urls import redact_url
from connectors.tokens import TokenSource

__all__ = ["BearerAuth"]

logger = logging.getLogger(__name__)


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` from ``tokens``; refreshes once after a 401 (``refreshed`` then says so)."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens
        self._token: str | None = None
        self.refreshed = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._token = self._token or self._tokens.get_token()
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code != 401 or self.refreshed:
            return
        response.read()  # a small error body; frees the connection before the token call
        logger.info("401 from server, refreshing the token once", extra={"url": redact_url(str(request.url))})
        self._token = self._tokens.refresh_after_unauthorized(self._token)
        self.refreshed = True
        again = httpx.Request(
            request.method,
            request.url,
            headers=request.headers.copy(),
            stream=request.stream,
            extensions=dict(request.extensions),
        )
        again.headers["Authorization"] = f"Bearer {self._token}"
        yield again

    def __repr__(self) -> str:
        return f"BearerAuth(refreshed={self.refreshed})"
