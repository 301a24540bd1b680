"""Admin purge and data retention: a tenant purges a connection's synced data and sets how long it is kept.

The purge itself is the engine's (``engine.purge``: landing, warehouse, attachments, sync state, locked and
audited); the auth service never opens the warehouse itself. A connection of another tenant is not found.
"""

from __future__ import annotations

from typing import Any

from auth_service.services import connections as conns
from auth_service.services.audit import audit_event
from auth_service.services.context import ServiceContext
from auth_service.services.errors import NotFoundError, PurgeRefusedError, WarehouseReadError
from engine.connection_lock import ConnectionBusyError
from engine.purge import PurgeTargets, PurgeWarehouseError, purge_connection
from engine.retention import MAX_RETENTION_DAYS
from engine.settings import PipelineSettings
from store.models import ConnectionStatus, Tenant

__all__ = ["MAX_RETENTION_DAYS", "get_retention", "purge", "set_retention"]


def _targets(ctx: ServiceContext) -> PurgeTargets:
    """The locations every ehrsync process resolves from the shared settings (state directory, warehouse)."""
    engine = PipelineSettings.from_app(ctx.settings)
    limits = engine.limits
    return PurgeTargets.at(
        ctx.db, engine.state_dir, engine.warehouse_url, lock_wait_s=limits.lock_wait_s, duckdb=limits.duckdb
    )


def purge(ctx: ServiceContext, tenant_id: str, connection_id: str, actor: str, *, disconnect: bool) -> dict[str, Any]:
    """Purge the tenant's connection; an active one only with ``disconnect`` (it is disconnected first, and the
    answer says what became of the revocation as the disconnect's does: ``revoked_at_server``, ``revocation``, and
    ``revocation_error`` / ``warning`` when it was not made). A purge that fails after that disconnect says so in its
    error too (``disconnected: true`` and the same fields): the connection stays disconnected, purge it again."""
    conn = conns.get_connection(ctx, tenant_id, connection_id)
    targets = _targets(ctx)  # a settings problem refuses the purge before any disconnect, not after it
    revocation: dict[str, Any] = {}
    if conn.status != ConnectionStatus.DISCONNECTED:
        if not disconnect:
            raise PurgeRefusedError(
                f"connection is {conn.status}: only a disconnected connection is purged (its next sync would fill "
                "it again); disconnect it first or send disconnect=true",
                connectionStatus=conn.status,
            )
        disconnected = conns.disconnect(ctx, conn, actor)
        revocation = {k: v for k, v in disconnected.items() if k not in ("connection_id", "status")}
    try:
        report = purge_connection(targets, connection_id, actor=actor)
    except ConnectionBusyError:
        busy = "a sync of this connection is still running; purge again when it has finished"
        raise PurgeRefusedError(
            _after_disconnect(busy, revocation), code="connection_busy", **_disconnected(revocation)
        ) from None
    except PurgeWarehouseError as exc:  # a sync held the warehouse past the wait, or it is down: purge again later
        raise WarehouseReadError(
            _after_disconnect(str(exc), revocation),
            code="warehouse_unavailable",
            retry_after_s=60,
            **_disconnected(revocation),
        ) from None
    return {**report.as_json(), **revocation, "status": ConnectionStatus.DISCONNECTED}


def _disconnected(revocation: dict[str, Any]) -> dict[str, Any]:
    """The error's fields for a purge that disconnected the connection first (none when it was disconnected)."""
    return {"disconnected": True, **revocation} if revocation else {}


def _after_disconnect(message: str, revocation: dict[str, Any]) -> str:
    """A failed purge's message, and, when this request disconnected the connection first, that it did and what
    became of the tokens: the operator must not take the connection for untouched."""
    if not revocation:
        return message
    if revocation["revoked_at_server"]:
        tokens = "the tokens were revoked at the EHR and deleted"
    else:
        tokens = revocation.get("warning") or "no tokens were stored, so there was nothing to revoke at the EHR"
    return (
        f"{message}. The connection was disconnected first and stays disconnected ({tokens}): purge it again, "
        "disconnect is no longer needed"
    )


def get_retention(ctx: ServiceContext, tenant_id: str) -> dict[str, Any]:
    with ctx.db.session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFoundError("no such tenant")
        return {"tenant_id": tenant_id, "data_retention_days": tenant.data_retention_days}


def set_retention(ctx: ServiceContext, tenant_id: str, days: int | None, actor: str) -> dict[str, Any]:
    """``days`` after its disconnection a connection's data is purged by the daily retention job (None: kept
    until an admin purges it)."""
    with ctx.db.locked_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFoundError("no such tenant")
        previous = tenant.data_retention_days
        tenant.data_retention_days = days
        session.commit()
    audit_event(ctx, "tenant.retention", "success", tenant_id, actor, detail={"days": days, "previous": previous})
    return {"tenant_id": tenant_id, "data_retention_days": days}
