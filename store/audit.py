"""Audit trail writes; the detail is checked so tokens, codes and secrets cannot slip in."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from store.models import AuditEvent, Connection

__all__ = ["FORBIDDEN_DETAIL_KEYS", "audit_connection", "record_audit"]

logger = logging.getLogger(__name__)

FORBIDDEN_DETAIL_KEYS = ("token", "secret", "code", "assertion", "verifier", "password", "state", "key")
_ALLOWED_EXCEPTIONS = frozenset({"error_code", "status_code", "key_id", "token_type", "token_endpoint"})


def _check_detail(detail: Mapping[str, Any]) -> None:
    for name, value in detail.items():
        lowered = name.lower()
        if lowered not in _ALLOWED_EXCEPTIONS and any(word in lowered for word in FORBIDDEN_DETAIL_KEYS):
            raise ValueError(f"audit detail key {name!r} looks like a secret; audit events never hold secrets")
        if isinstance(value, Mapping):
            _check_detail(value)


def record_audit(
    session: Session,
    *,
    action: str,
    outcome: str,
    tenant_id: str | None = None,
    actor: str = "system",
    connection_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the session's transaction (committed with the change it describes)."""
    payload = dict(detail or {})
    _check_detail(payload)
    event = AuditEvent(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        connection_id=connection_id,
        outcome=outcome,
        detail=payload,
    )
    session.add(event)
    logger.info("audit %s %s connection=%s tenant=%s", action, outcome, connection_id, tenant_id)
    return event


def audit_connection(
    session: Session, conn: Connection, *, action: str, outcome: str, detail: Mapping[str, Any]
) -> AuditEvent:
    """A system event about one connection, filed under the connection's tenant."""
    return record_audit(
        session, action=action, outcome=outcome, tenant_id=conn.tenant_id, connection_id=conn.id, detail=detail
    )
