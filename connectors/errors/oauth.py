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


class UnusableTokenAnswerError(OAuthError):
    """A token endpoint answered 200 but ehrsync cannot use the answer (no ``access_token``, no Bearer
    ``token_type``, an ``expires_in`` not a positive number): ``error`` is ``invalid_response``, the message names
    the problem and never a token. The grant did happen: ``rotated_refresh_token`` is the refresh token a refresh's
    answer carried (None: none usable, or another grant), live at a server that rotates them while the one sent is
    used up, so the vault keeps it. ``issued_tokens`` are the ``(token type, token)`` pairs another grant's answer
    (a code exchange, ``client_credentials``) carried, refresh token first: a grant nobody will hold, for the caller
    to revoke (RFC 7009). Neither is ever in a message or repr; both are taken out before the error is raised on."""

    code = "invalid_response"

    def __init__(
        self,
        problem: str,
        rotated_refresh_token: str | None,
        status: int | None = None,
        issued_tokens: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__("invalid_response", problem, None, status)
        self.rotated_refresh_token = rotated_refresh_token
        self.issued_tokens = issued_tokens


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


#: What a token endpoint's refusal of a ``client_credentials`` grant (SMART Backend Services) means, in words an
#: admin can act on (RFC 6749 §5.2); codes it does not define get :data:`_UNDEFINED_REFUSAL`.
_CLIENT_CREDENTIALS_REFUSALS = {
    "unauthorized_client": "the EHR's client registration does not allow this client the client_credentials grant",
    "invalid_client": (
        "the EHR did not accept the client's authentication (unknown or disabled client, or its key id / JWKS not "
        "registered or not reachable by the EHR)"
    ),
    "invalid_scope": "the EHR's client registration does not allow the scopes asked for (or not in this form)",
    "invalid_grant": (
        "the EHR refused the grant itself (often the signed client assertion: its aud, exp, jti or signature, or "
        "a clock skew between the servers)"
    ),
    "invalid_request": "the EHR found the token request malformed (a parameter or a form it does not accept)",
    "unsupported_grant_type": "the EHR does not offer the client_credentials grant (Backend Services) to this client",
    "access_denied": "the EHR denied this client access",
}
_UNDEFINED_REFUSAL = "the EHR refused the grant with a code RFC 6749 does not define (see the vendor's documentation)"
#: The ``error`` kept for a refusal whose own code is not RFC 6749 shaped or repeats a credential of the request.
MALFORMED_ERROR = "malformed_error"
_CLIENT_CREDENTIALS_REFUSALS[MALFORMED_ERROR] = (
    "the EHR refused the grant with an error code not in RFC 6749's form, not shown (servers may repeat the request "
    "there): see the EHR's own log of this client's token requests"
)
#: Answers that are not a refusal of the client: a throttle (408/429 with an OAuth body), or no usable answer.
_NOT_REFUSALS = frozenset({"temporarily_unavailable", "server_error", "invalid_response"})


def is_refusal(exc: OAuthError) -> bool:
    """Whether ``exc`` is the server refusing this client or request (asking again the same way is refused
    again), not the server failing or throttling: a 5xx, 408 or 429, ``temporarily_unavailable``, or an answer
    without a usable OAuth error body (``invalid_response``) is an outage, retried or reported as one."""
    status = exc.status  # None: an error built without its answer's status
    throttled_or_failing = status is not None and (not 400 <= status < 500 or status in (408, 429))
    return not (exc.error in _NOT_REFUSALS or throttled_or_failing or isinstance(exc, TemporarilyUnavailableError))


def client_credentials_refusal(error: str) -> str:
    """What a token endpoint's ``error`` refusing a client_credentials grant means, in words an admin can act on."""
    return _CLIENT_CREDENTIALS_REFUSALS.get(error, _UNDEFINED_REFUSAL)


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
