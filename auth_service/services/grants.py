"""Keep a connection the EHR just granted: its row, audit entry and tokens in one transaction.

Shared by the patient callback (launch.py) and SMART Backend Services (connections.py), so both store a
connection the same way. One transaction: a process killed or a database failing half way leaves neither a
connection without tokens nor (the callback's ``record``) tokens stored that the callback's state does not name.
Tokens the EHR issued that this transaction failed to store are revoked there, best effort (``unstored_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from auth_service.services.context import ServiceContext
from auth_service.services.profiles import ClientProfile
from auth_service.services.unstored_tokens import revoke_unstored
from connectors.smart import SmartConfiguration, TokenResponse
from store.audit import record_audit
from store.models import Connection, ConnectionStatus

__all__ = ["keep_connection"]


def keep_connection(
    ctx: ServiceContext,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    token: TokenResponse,
    *,
    action: str,
    actor: str,
    detail: dict[str, Any],
    record: Callable[[Session, str], None] | None = None,
    on_saved: Callable[[str], None] | None = None,
    **fields: Any,
) -> str:
    """Store an active connection (``fields``: its kind, granted scopes, patient...) with its audit entry and its
    tokens; returns the connection's id. ``record`` writes beside them, in the same transaction (committed with
    them or not at all); ``on_saved`` is told the id once that transaction is committed."""
    try:
        connection_id = _store(ctx, profile, cfg, token, action, actor, detail, record, fields)
    except Exception:  # rolled back: the EHR issued tokens that are kept nowhere (re-raised, answered as before)
        revoke_unstored(ctx, profile, cfg, token)
        raise
    if on_saved is not None:
        on_saved(connection_id)
    return connection_id


def _store(
    ctx: ServiceContext,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    token: TokenResponse,
    action: str,
    actor: str,
    detail: dict[str, Any],
    record: Callable[[Session, str], None] | None,
    fields: dict[str, Any],
) -> str:
    """The one transaction: the connection, its audit entry, its tokens and ``record``'s write."""
    with ctx.db.locked_session() as session:
        conn = Connection(
            tenant_id=profile.tenant_id,
            provider_id=profile.provider_id,
            fhir_base=profile.fhir_base,
            issuer=cfg.issuer or profile.issuer,
            client_id=profile.client_id,
            token_endpoint=cfg.token_endpoint,
            smart_v1=cfg.smart_v1,
            status=ConnectionStatus.ACTIVE,
            **fields,
        )
        session.add(conn)
        session.flush()
        connection_id = conn.id
        record_audit(
            session,
            action=action,
            outcome="success",
            tenant_id=profile.tenant_id,
            actor=actor,
            connection_id=connection_id,
            detail={"provider": profile.provider_id, **detail},
        )
        ctx.vault.save_token_response(connection_id, token, session=session)
        if record is not None:
            record(session, connection_id)
    return connection_id
