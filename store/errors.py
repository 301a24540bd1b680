"""Connection states an admin must act on, as typed errors (both stop a sync like ``NeedsReauthError``).

``client_rejected`` and ``token_undecryptable`` are also the connection's status, visible in the admin API; a
token sealed under a key id this process lacks (``TokenKeyMissingError``, same code) is this process's
configuration problem and leaves the status alone.
"""

from __future__ import annotations

from connectors.errors import NeedsReauthError

__all__ = ["ClientRejectedError", "TokenKeyMissingError", "TokenUndecryptableError"]


class ClientRejectedError(NeedsReauthError):
    """A backend connection's freshly re-acquired token was refused with 401 too, or its token endpoint refused the
    client_credentials grant itself (``unauthorized_client``, ``invalid_client``): the EHR no longer accepts the
    client (registration, scopes or key changed). No patient action helps; an admin must check the registration."""

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
