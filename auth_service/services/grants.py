"""Keep a connection the EHR just granted: its row and audit entry, then its tokens in the vault.

Shared by the patient callback (launch.py) and SMART Backend Services (connections.py), so both store a
connection the same way and neither leaves one behind without tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auth_service.services.context import ServiceContext
from auth_service.services.profiles import ClientProfile
from connectors.smart import SmartConfiguration, TokenResponse
from store.audit import record_audit
from store.models import Connection, ConnectionStatus

__all__ = ["keep_connection", "save_tokens_or_forget"]


def keep_connection(
    ctx: ServiceContext,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    token: TokenResponse,
    *,
    action: str,
    actor: str,
    detail: dict[str, Any],
    on_saved: Callable[[str], None] | None = None,
    **fields: Any,
) -> str:
    """Store an active connection (``fields``: its kind, granted scopes, patient...) with its audit entry, then
    its tokens; returns the connection's id. ``on_saved`` is told the id once the tokens are stored too."""
    with ctx.db.session() as session, session.begin():
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
    save_tokens_or_forget(ctx, connection_id, token)
    if on_saved is not None:
        on_saved(connection_id)
    return connection_id


def save_tokens_or_forget(ctx: ServiceContext, connection_id: str, token: TokenResponse) -> None:
    """A connection without tokens would look usable: if the vault refuses them, drop the connection."""
    try:
        ctx.vault.save_token_response(connection_id, token)
    except Exception:
        with ctx.db.session() as session, session.begin():
            conn = session.get(Connection, connection_id)
            if conn is not None:
                session.delete(conn)
        raise
