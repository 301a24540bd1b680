"""Keep a connection the EHR just granted: its row, audit entry and tokens in one transaction.

Shared by the patient callback (launch.py) and SMART Backend Services (connections.py), so both store a
connection the same way. One transaction: a process killed or a database failing half way leaves neither a
connection without tokens nor (the callback's ``record``) tokens stored that the callback's state does not name.
Tokens the EHR issued that this transaction failed to store are revoked there, best effort (``unstored_tokens``).
A patient's grant (``reauthorize``) takes over the connection of the same patient and user it replaces, in that
same transaction (``reauthorization``); the old grant's tokens it does not reuse are revoked once it is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from auth_service.services.context import ServiceContext
from auth_service.services.profiles import ClientProfile
from auth_service.services.reauthorization import find_replaced, take_over
from auth_service.services.unstored_tokens import revoke_issued, revoke_unstored
from connectors.smart import SmartConfiguration, TokenResponse
from store.audit import record_audit
from store.models import Connection, ConnectionStatus

__all__ = ["KeptConnection", "keep_connection"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptConnection:
    """The connection a grant was stored on; ``reauthorized``: an existing one it took over (``reauthorization``)."""

    connection_id: str
    reauthorized: bool = False
    replaced_tokens: list[tuple[str, str]] = field(default_factory=list, repr=False)


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
    reauthorize: bool = False,
    **fields: Any,
) -> KeptConnection:
    """Store an active connection (``fields``: its kind, granted scopes, patient...) with its audit entry and its
    tokens. ``record`` writes beside them, in the same transaction (committed with them or not at all); ``on_saved``
    is told the id once that transaction is committed. ``reauthorize``: a patient's grant, stored on the connection
    it replaces when there is one (``reauthorization.find_replaced``)."""
    try:
        kept = _store(ctx, profile, cfg, token, action, actor, detail, record, fields, reauthorize)
    except Exception:  # rolled back: the EHR issued tokens that are kept nowhere (re-raised, answered as before)
        revoke_unstored(ctx, profile, cfg, token)
        raise
    if kept.replaced_tokens:  # best effort, never raises; not when a connection holds them (``held_tokens``)
        revoke_issued(ctx, profile, cfg, kept.replaced_tokens, f"of connection {kept.connection_id}'s replaced grant")
    if on_saved is not None:
        on_saved(kept.connection_id)
    return kept


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
    reauthorize: bool,
) -> KeptConnection:
    """The one transaction: the connection (new or taken over), its audit entry, its tokens and ``record``'s write."""
    with ctx.db.locked_session() as session:
        replaced = find_replaced(session, profile, fields) if reauthorize else None
        if replaced is not None:
            old = take_over(session, ctx.cipher, replaced, profile, cfg, token, actor=actor, fields=fields)
            _audit(session, profile, replaced.id, action, actor, {**detail, "reauthorized": True})
            if record is not None:
                record(session, replaced.id)
            logger.info("connection %s re-authorized: the new grant took it over", replaced.id)
            return KeptConnection(replaced.id, reauthorized=True, replaced_tokens=old)
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
        _audit(session, profile, connection_id, action, actor, detail)
        ctx.vault.save_token_response(connection_id, token, session=session)
        if record is not None:
            record(session, connection_id)
    return KeptConnection(connection_id)


def _audit(
    session: Session, profile: ClientProfile, connection_id: str, action: str, actor: str, detail: dict[str, Any]
) -> None:
    record_audit(
        session,
        action=action,
        outcome="success",
        tenant_id=profile.tenant_id,
        actor=actor,
        connection_id=connection_id,
        detail={"provider": profile.provider_id, **detail},
    )
