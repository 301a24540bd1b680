"""OAuth error responses of the sandbox's authorization server."""

from __future__ import annotations


class OAuthFailure(Exception):
    """An RFC 6749 error to send back: ``error`` code, description, HTTP status and optional challenge."""

    def __init__(self, error: str, description: str, status: int = 400, www_authenticate: str | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.www_authenticate = www_authenticate
