"""Reading the audit trail for the admin API; writes go through ``store.audit.record_audit``, or through
``audit_event`` when the event describes no change of its own (a refusal, a read, a started flow)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from auth_service.services.context import ServiceContext
from store.audit import record_audit
from store.models import AuditEvent

__all__ = ["audit_event", "list_events", "record_audit"]


def audit_event(ctx: ServiceContext, action: str, outcome: str, tenant_id: str, actor: str, **fields: Any) -> None:
    """Record one event in a transaction of its own (``fields``: ``connection_id``, ``detail``)."""
    with ctx.db.session() as session, session.begin():
        record_audit(session, action=action, outcome=outcome, tenant_id=tenant_id, actor=actor, **fields)


def list_events(
    session: Session,
    tenant_id: str,
    limit: int = 100,
    connection_id: str | None = None,
    *,
    before: int | None = None,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first, only the tenant's own events; ``before`` (an event id) pages back, ``action`` filters."""
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if connection_id:
        query = query.where(AuditEvent.connection_id == connection_id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if action:
        query = query.where(AuditEvent.action == action)
    rows = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit))
    return [
        {
            "id": r.id,
            "at": r.created_at.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "outcome": r.outcome,
            "connection_id": r.connection_id,
            "detail": r.detail,
        }
        for r in rows
    ]
