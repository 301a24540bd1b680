"""Connection states an admin must act on, as typed errors (both stop a sync like ``NeedsReauthError``).

``client_rejected`` and ``token_undecryptable`` are also the connection's status, visible in the admin API.
"""

from __future__ import annotations

from connectors.errors import NeedsReauthError

__all__ = ["ClientRejectedError", "TokenUndecryptableError"]


class ClientRejectedError(NeedsReauthError):
    """A backend connection's freshly re-acquired token was refused with 401 too: the EHR no longer accepts the
    client (registration, scopes or key changed). No patient action helps; an admin must check the registration."""

    code = "client_rejected"


class TokenUndecryptableError(NeedsReauthError):
    """A stored token cannot be decrypted (key removed, ciphertext moved or tampered): never retried."""

    code = "token_undecryptable"
