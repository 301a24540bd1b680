"""App database and token vault (plain Python: no FastAPI, no Dagster).

Public API: ``AppDatabase``, ``TokenCipher``, ``TokenVault``, ``OAuthStateStore``, ``rotate_keys``,
``refresh_idle_grants``, ``SharedRateBudget``, ``check_usable`` and the models in ``store.models``. See
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from store._grants import RetryPolicy
    from store._refresh import RefreshLockTimeoutError
    from store._refresh_lock import REFRESH_LOCK_TIMEOUT_S
    from store._states import check_usable
    from store.audit import record_audit
    from store.crypto import CipherError, TokenCipher
    from store.database import AppDatabase
    from store.keepalive import KeepaliveReport, refresh_idle_grants
    from store.keyrotation import rotate_keys
    from store.provider_configs import client_auth_from_config, load_provider_config, save_provider_config
    from store.rate_windows import SharedRateBudget
    from store.states import ConsumedState, InvalidStateError, OAuthStateStore
    from store.vault import TokenInfo, TokenVault, UnknownConnectionError, VaultTokenSource

__all__ = [
    "REFRESH_LOCK_TIMEOUT_S",
    "AppDatabase",
    "CipherError",
    "ConsumedState",
    "InvalidStateError",
    "KeepaliveReport",
    "OAuthStateStore",
    "RefreshLockTimeoutError",
    "RetryPolicy",
    "SharedRateBudget",
    "TokenCipher",
    "TokenInfo",
    "TokenVault",
    "UnknownConnectionError",
    "VaultTokenSource",
    "check_usable",
    "client_auth_from_config",
    "load_provider_config",
    "record_audit",
    "refresh_idle_grants",
    "rotate_keys",
    "save_provider_config",
]

# Each public name's module, imported on first use (PEP 562):
# ``ehrsync db migrate`` and ``connections list`` need ``AppDatabase``, not httpx and the vendor plugins.
_HOMES = {
    "RetryPolicy": "store._grants",
    "RefreshLockTimeoutError": "store._refresh",
    "REFRESH_LOCK_TIMEOUT_S": "store._refresh_lock",
    "check_usable": "store._states",
    "record_audit": "store.audit",
    "CipherError": "store.crypto",
    "TokenCipher": "store.crypto",
    "AppDatabase": "store.database",
    "KeepaliveReport": "store.keepalive",
    "refresh_idle_grants": "store.keepalive",
    "rotate_keys": "store.keyrotation",
    "client_auth_from_config": "store.provider_configs",
    "load_provider_config": "store.provider_configs",
    "save_provider_config": "store.provider_configs",
    "SharedRateBudget": "store.rate_windows",
    "ConsumedState": "store.states",
    "InvalidStateError": "store.states",
    "OAuthStateStore": "store.states",
    "TokenInfo": "store.vault",
    "TokenVault": "store.vault",
    "UnknownConnectionError": "store.vault",
    "VaultTokenSource": "store.vault",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
