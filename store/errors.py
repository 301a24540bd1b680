"""Connection states an admin must act on, as typed errors (both stop a sync like ``NeedsReauthError``).

``client_rejected`` and ``token_undecryptable`` are also the connection's status, visible in the admin API; a
token sealed under a key id this process lacks (``TokenKeyMissingError``, same code) is this process's
configuration problem and leaves the status alone.

``RefreshDeferredError`` and ``NoRefreshTokenError`` are not states: a refresh asked for *now* (an admin's) that was
not made, while the current token stays valid; the vault raises them only when asked not to keep that token quietly.
"""

from __future__ import annotations

from datetime import datetime

from connectors.errors import EhrSyncError, NeedsReauthError

__all__ = [
    "ClientRejectedError",
    "NoRefreshTokenError",
    "RefreshDeferredError",
    "TokenKeyMissingError",
    "TokenUndecryptableError",
    "UnknownConnectionError",
]


class ClientRejectedError(NeedsReauthError):
    """A backend connection's freshly re-acquired token was refused with 401 too, or its token endpoint refused the
    client_credentials grant itself (``unauthorized_client``, ``invalid_client``), or a patient connection's refresh
    was refused ``invalid_client`` (the client's authentication: secret rotated, key not registered): the EHR no
    longer accepts the client (registration, credentials, scopes or key changed). No patient action helps; an admin
    must check the registration or credentials, then retry (``TokenVault.reactivate``). An ``invalid_client`` refusal
    pauses the other active connections using the same credentials too (``store._same_client``)."""

    code = "client_rejected"


class TokenUndecryptableError(NeedsReauthError):
    """A stored token cannot be decrypted (ciphertext moved or altered, or its key missing here): never retried."""

    code = "token_undecryptable"


class TokenKeyMissingError(TokenUndecryptableError):
    """The stored token is sealed under a key id this process is not configured with (e.g. a worker deployed
    without ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` during a rotation). The ciphertext may be fine, so the
    connection's status is not changed: adding the key to this process fixes it."""

    def __init__(self, message: str, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class UnknownConnectionError(EhrSyncError):
    """No connection has this id (the vault's callers name one that was never stored, or was deleted)."""

    code = "unknown_connection"


class RefreshDeferredError(EhrSyncError):
    """A refresh asked for now failed transiently (the vendor's call budget busy, a timeout, the EHR's 5xx or
    ``temporarily_unavailable``): nothing new was stored and the current token, still valid until ``valid_until``,
    was kept. ``cause`` is the transient error; ``retry_after`` the seconds it says to wait (None: it does not say)."""

    code = "refresh_deferred"

    def __init__(self, connection_id: str, cause: EhrSyncError, valid_until: datetime) -> None:
        super().__init__(
            f"connection {connection_id}: the refresh was not done: {cause}; the current access token was kept and "
            f"stays valid until {valid_until.isoformat()}"
        )
        self.cause = cause
        self.valid_until = valid_until
        self.retry_after = cause.retry_after  # the EHR's Retry-After (429/503), or when the call budget frees a call


class NoRefreshTokenError(EhrSyncError):
    """A refresh asked for now of a connection the EHR gave no refresh token (``offline_access`` or
    ``online_access`` not granted): it cannot be refreshed; its access token stays valid until ``valid_until``, then
    a person must authorize again."""

    code = "no_refresh_token"

    def __init__(self, connection_id: str, valid_until: datetime) -> None:
        super().__init__(
            f"connection {connection_id} has no refresh token (the EHR granted neither offline_access nor "
            f"online_access), so it cannot be refreshed; its access token stays valid until "
            f"{valid_until.isoformat()}, then the patient must authorize again"
        )
        self.valid_until = valid_until
