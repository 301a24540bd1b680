"""Sealing token answers into ``tokens`` rows and opening single fields again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from connectors.errors import ConfigurationError
from connectors.providers import get_provider
from connectors.smart import TokenResponse
from store.crypto import ENV_OLD_KEYS, CipherError, TokenCipher, UnknownKeyIdError
from store.errors import TokenKeyMissingError, TokenUndecryptableError
from store.models import Connection, TokenRecord

__all__ = ["TOKEN_FIELDS", "keep_refresh_token", "open_field", "seal_field", "write_tokens"]

TOKEN_FIELDS = ("access_token", "refresh_token", "id_token")


def seal_field(cipher: TokenCipher, tenant_id: str, connection_id: str, field: str, value: str) -> str:
    return cipher.encrypt(value, tenant_id=tenant_id, owner_id=connection_id, field=field)


def open_field(cipher: TokenCipher, row: TokenRecord, field: str) -> str:
    """Decrypt one of ``access_token``/``refresh_token``/``id_token`` of a row (AAD-bound to that row).

    ``TokenKeyMissingError`` when its key id is not configured here, ``TokenUndecryptableError`` when it fails
    authentication under a configured key (altered, or moved from another row)."""
    envelope: str | None = getattr(row, f"{field}_ct")
    if envelope is None:
        raise KeyError(f"connection {row.connection_id} has no stored {field}")
    try:
        return cipher.decrypt(envelope, tenant_id=row.tenant_id, owner_id=row.connection_id, field=field)
    except UnknownKeyIdError as exc:
        raise TokenKeyMissingError(
            f"connection {row.connection_id}: the stored {field} is sealed under unknown key id {exc.kid!r}, which "
            f"this process is not configured with: add it to {ENV_OLD_KEYS} ('{exc.kid}:<base64 key>') and "
            "restart; the connection's status is unchanged",
            exc.kid,
        ) from None
    except CipherError as exc:
        raise TokenUndecryptableError(
            f"connection {row.connection_id}: the stored {field} cannot be decrypted ({exc.message})"
        ) from None


def write_tokens(
    session: Session,
    cipher: TokenCipher,
    conn: Connection,
    row: TokenRecord | None,
    response: TokenResponse,
    *,
    now: datetime,
) -> TokenRecord:
    """Insert or update the row from a token answer (SAL-17, SAL-24).

    A returned refresh token replaces the stored one; none returned keeps it (Cerner keeps the original).
    The granted ``scope`` is the truth (SAL-21) and is copied to the connection; an absent one keeps the old.
    """

    def seal(field: str, value: str) -> str:
        return seal_field(cipher, conn.tenant_id, conn.id, field, value)

    if row is None:
        row = TokenRecord(connection_id=conn.id, tenant_id=conn.tenant_id, version=0, launch_context={})
        session.add(row)
    row.access_token_ct = seal("access_token", response.access_token)
    if response.refresh_token:
        row.refresh_token_ct = seal("refresh_token", response.refresh_token)
    if response.id_token:
        row.id_token_ct = seal("id_token", response.id_token)
    row.key_id = cipher.active_kid
    row.token_type = response.token_type
    if response.scope is not None:
        row.scope = response.scope
        conn.granted_scopes = response.scope
    row.issued_at = response.issued_at
    row.expires_at = _expiry(conn.provider_id, response)
    row.launch_context = {**(row.launch_context or {}), **response.launch_context()}
    row.updated_at = now
    row.version = (row.version or 0) + 1
    if response.patient and not conn.patient_id:
        conn.patient_id = response.patient
    if response.encounter:
        conn.encounter_id = response.encounter
    conn.updated_at = now
    session.flush()
    return row


def _expiry(provider_id: str, response: TokenResponse) -> datetime:
    """The answer's expiry, capped at the lifetime the vendor documents (``token_ttl_hint``, Oracle Health's 570 s)."""
    try:
        plugin = get_provider(provider_id)
    except ConfigurationError:  # an unknown id: ``expires_in`` alone
        return response.expires_at
    return plugin.token_expiry(response.issued_at, response.expires_at)


def keep_refresh_token(
    session: Session, cipher: TokenCipher, row: TokenRecord, refresh_token: str, *, now: datetime
) -> None:
    """Store a rotated refresh token alone (its answer was otherwise unusable): sealed like ``write_tokens`` seals
    it, the row's version bumped so a refresh that read the old one writes nothing onto it."""
    row.refresh_token_ct = seal_field(cipher, row.tenant_id, row.connection_id, "refresh_token", refresh_token)
    row.updated_at = now
    row.version = (row.version or 0) + 1
    session.flush()
