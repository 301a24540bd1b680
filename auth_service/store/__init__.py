"""App database and token vault (plain Python: no FastAPI, no Dagster).

Public API: ``AppDatabase``, ``TokenCipher``, ``TokenVault``, ``OAuthStateStore``, ``rotate_keys``,
``refresh_idle_grants`` and the models in ``auth_service.store.models``. See docs/ARCHITECTURE.md.
"""

from auth_service.store._grants import RetryPolicy
from auth_service.store._refresh import RefreshLockTimeoutError
from auth_service.store.audit import record_audit
from auth_service.store.crypto import CipherError, TokenCipher
from auth_service.store.database import AppDatabase
from auth_service.store.keepalive import KeepaliveReport, refresh_idle_grants
from auth_service.store.keyrotation import rotate_keys
from auth_service.store.provider_configs import client_auth_from_config, load_provider_config, save_provider_config
from auth_service.store.states import ConsumedState, InvalidStateError, OAuthStateStore
from auth_service.store.vault import TokenInfo, TokenVault, UnknownConnectionError, VaultTokenSource

__all__ = [
    "AppDatabase",
    "CipherError",
    "ConsumedState",
    "InvalidStateError",
    "KeepaliveReport",
    "OAuthStateStore",
    "RefreshLockTimeoutError",
    "RetryPolicy",
    "TokenCipher",
    "TokenInfo",
    "TokenVault",
    "UnknownConnectionError",
    "VaultTokenSource",
    "client_auth_from_config",
    "load_provider_config",
    "record_audit",
    "refresh_idle_grants",
    "rotate_keys",
    "save_provider_config",
]
