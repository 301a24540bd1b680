"""Re-encrypt every stored token and secret with the active key (the last step of a key rotation).

Rotation: deploy the new key as ``INTEGRATIONS_TOKEN_ENC_KEY`` with the old one in
``INTEGRATIONS_TOKEN_ENC_KEYS_OLD``; run ``rotate_keys``; once it returns, the old key can be dropped.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from store.crypto import ENV_OLD_KEYS, CipherError, TokenCipher
from store.database import AppDatabase
from store.models import OAuthState, ProviderConfig, SigningKey, TokenRecord
from store.provider_configs import reseal_config
from store.tokenrows import TOKEN_FIELDS

__all__ = ["KeyRotationIncompleteError", "rotate_keys"]

logger = logging.getLogger(__name__)


class KeyRotationIncompleteError(CipherError):
    """Rotation finished, but some tokens rows could not be opened and are still under their old key."""

    code = "key_rotation_incomplete"


def rotate_keys(db: AppDatabase, cipher: TokenCipher) -> int:
    """Re-seal every ciphertext not under the active key; returns how many were re-encrypted.

    Each token row is re-sealed under the write lock (``FOR UPDATE`` / ``BEGIN IMMEDIATE``) so a concurrent
    refresh cannot be overwritten with stale tokens. A row that does not open (altered, moved, or under a key id
    not configured here) is left as it is and rotation goes on; ``KeyRotationIncompleteError`` then names those
    connections, after everything else is re-encrypted.
    """
    count = 0
    with db.session() as session:
        connection_ids = list(session.scalars(select(TokenRecord.connection_id)))
    left: list[str] = []
    for connection_id in connection_ids:
        try:
            count += _rotate_token_row(db, cipher, connection_id)
        except CipherError as exc:
            logger.error("key rotation: connection %s left under its old key (%s)", connection_id, exc.message)
            left.append(connection_id)
    with db.locked_session() as session:
        for config in session.scalars(select(ProviderConfig)):
            count += reseal_config(cipher, config)
        for state in session.scalars(select(OAuthState).where(OAuthState.used_at.is_(None))):
            if cipher.needs_rotation(state.code_verifier_ct):
                state.code_verifier_ct = cipher.reencrypt(
                    state.code_verifier_ct,
                    tenant_id=state.tenant_id,
                    owner_id=f"state:{state.state_hash}",
                    field="code_verifier",
                )
                state.key_id = cipher.active_kid
                count += 1
        for key in session.scalars(select(SigningKey)):
            if cipher.needs_rotation(key.private_key_ct):
                key.private_key_ct = cipher.reencrypt(
                    key.private_key_ct,
                    tenant_id=key.tenant_id or "",
                    owner_id=f"signing_key:{key.kid}",
                    field="private_key",
                )
                key.key_id = cipher.active_kid
                count += 1
    logger.info("key rotation re-encrypted %d values with key %s", count, cipher.active_kid)
    if left:
        raise KeyRotationIncompleteError(
            f"re-encrypted {count} value(s), but the tokens of connection(s) {', '.join(left)} do not open under "
            "any configured key (altered or moved: restore them from a backup or disconnect; an unknown key id: "
            f"add it to {ENV_OLD_KEYS}); keep the old key configured until they are dealt with"
        )
    return count


def _rotate_token_row(db: AppDatabase, cipher: TokenCipher, connection_id: str) -> int:
    """Re-seal one tokens row in its own write transaction (all its fields or none); how many changed."""
    count = 0
    with db.locked_session() as session:
        row = session.scalars(
            select(TokenRecord).where(TokenRecord.connection_id == connection_id).with_for_update()
        ).one_or_none()
        if row is None:
            return 0
        for field in TOKEN_FIELDS:
            envelope: str | None = getattr(row, f"{field}_ct")
            if envelope is not None and cipher.needs_rotation(envelope):
                resealed = cipher.reencrypt(envelope, tenant_id=row.tenant_id, owner_id=connection_id, field=field)
                setattr(row, f"{field}_ct", resealed)
                count += 1
        row.key_id = cipher.active_kid
    return count
