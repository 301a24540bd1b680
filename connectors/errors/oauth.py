"""OAuth 2.0 error responses (SAL-36): one subclass per RFC 6749 ``error`` code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.errors.base import EhrSyncError


class OAuthError(EhrSyncError):
    """An RFC 6749 error response from an authorization or token endpoint."""

    code = "oauth_error"

    def __init__(
        self,
        error: str,
        error_description: str | None = None,
        error_uri: str | None = None,
        status: int | None = None,
    ) -> None:
        detail = f": {error_description}" if error_description else ""
        super().__init__(f"{error}{detail}")
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status = status


class AccessDeniedError(OAuthError):
    code = "access_denied"


class InvalidRequestError(OAuthError):
    code = "invalid_request"


class InvalidClientError(OAuthError):
    code = "invalid_client"


class InvalidGrantError(OAuthError):
    code = "invalid_grant"


class InvalidScopeError(OAuthError):
    code = "invalid_scope"


class UnauthorizedClientError(OAuthError):
    code = "unauthorized_client"


class TemporarilyUnavailableError(OAuthError):
    code = "temporarily_unavailable"


_OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    cls.code: cls
    for cls in (
        AccessDeniedError,
        InvalidRequestError,
        InvalidClientError,
        InvalidGrantError,
        InvalidScopeError,
        UnauthorizedClientError,
        TemporarilyUnavailableError,
    )
}


def oauth_error_from_response(payload: Mapping[str, Any], status: int | None = None) -> OAuthError:
    """Build the typed error for an OAuth error body (unknown codes become a plain ``OAuthError``)."""
    error = str(payload.get("error") or "server_error")
    cls = _OAUTH_ERRORS.get(error, OAuthError)
    description = payload.get("error_description")
    uri = payload.get("error_uri")
    return cls(
        error,
        str(description) if description is not None else None,
        str(uri) if uri is not None else None,
        status,
    )
