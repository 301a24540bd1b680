"""Process entry points for the cross-process refresh tests (importable under ``spawn``)."""

from __future__ import annotations

from typing import Any

from store import AppDatabase, RetryPolicy, TokenCipher, TokenVault


def refresh_worker(url: str, key_b64: str, connection_id: str, barrier: Any, results: Any, mode: str) -> None:
    """Open the vault like a separate pipeline process would, wait for the others, then ask for a token."""
    db = AppDatabase.from_url(url)
    vault = TokenVault(db, TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": key_b64}), retry=RetryPolicy(attempts=1))
    try:
        current = vault.token_info(connection_id)
        rejected = vault.get_access_token(connection_id) if mode == "after_401" and current else None
        barrier.wait(timeout=60)
        if rejected is not None:
            token = vault.token_source(connection_id).refresh_after_unauthorized(rejected)
        else:
            token = vault.get_access_token(connection_id)
        results.put(("ok", token))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        db.dispose()
