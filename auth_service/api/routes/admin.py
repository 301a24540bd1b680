"""Admin API for host apps: provider configs, connections, connect links, audit (tenant-scoped API keys)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt

from auth_service.api.deps import AdminDep, CtxDep
from auth_service.api.errors import ApiError
from auth_service.services import client_retry, connectivity, provider_admin
from auth_service.services import connections as conns
from auth_service.services import purge as purges
from auth_service.services.audit import list_events
from auth_service.services.return_origins import ReturnToError, tenant_return_to

__all__ = ["router"]

router = APIRouter(prefix="/api/integrations", tags=["admin"])
ProviderId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
# ids only, as the sync API takes them: no NUL or other text PostgreSQL refuses in a lookup (a 422, never a 500)
# (empty still means "the newest connection", as before)
_CONNECTION_ID = r"^[A-Za-z0-9_.:-]*$"
ConnectionIdQuery = Annotated[str | None, Query(max_length=64, pattern=_CONNECTION_ID)]


class ConnectLinkRequest(BaseModel):
    user_ref: str = Field(min_length=1, max_length=200, description="The host app's id for the user (no PHI)")
    # JSON whole numbers only (as every count in the admin API): lax parsing read "600" or 600.0 as 600, true as 1.
    ttl_seconds: StrictInt | None = Field(default=None, ge=60, le=86400)
    return_to: str | None = Field(
        default=None, max_length=500, description="Host app page the done page links back to (allowedReturnOrigins)"
    )


class ConnectLinkResponse(BaseModel):
    url: str
    expires_in: int


class ConnectionRequest(BaseModel):
    connection_id: str | None = Field(default=None, max_length=64, pattern=_CONNECTION_ID)


class NoteRequest(ConnectionRequest):
    text: str = Field(min_length=1, max_length=100_000)
    patient: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9\-.]+$")


class PurgeRequest(BaseModel):
    # JSON true/false only: lax parsing read "yes" or 1 as true, disconnecting and purging on a typo.
    disconnect: StrictBool = Field(
        default=False, description="Disconnect the connection first if it is not (revokes its tokens), then purge."
    )


class RetentionRequest(BaseModel):
    # A JSON whole number only: lax parsing read true as 1 day (every disconnected connection purged the next day).
    data_retention_days: StrictInt | None = Field(
        ge=0,
        le=purges.MAX_RETENTION_DAYS,
        description="Days after its disconnection a connection's data is purged; null keeps it until purged.",
    )


class ReactivateRequest(BaseModel):
    limit: StrictInt = Field(
        default=client_retry.DEFAULT_LIMIT,
        ge=1,
        le=client_retry.MAX_LIMIT,
        description="At most this many client_rejected connections are retried per call (oldest change first).",
    )


class BackendRequest(BaseModel):
    provider: ProviderId
    scope: str = Field(min_length=1, max_length=2000)
    #: a FHIR id (BDX-01): it goes in Group/{id}/$export, where a slash or a query would export something else
    group_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]+$")


@router.post("/connect-links", response_model=ConnectLinkResponse, status_code=201)
def create_connect_link(admin: AdminDep, ctx: CtxDep, body: ConnectLinkRequest) -> ConnectLinkResponse:
    """A short-lived sealed link the host app hands to one of its users (its user ref is not readable in it)."""
    ttl = body.ttl_seconds or ctx.settings.CONNECT_LINK_TTL_SECONDS
    try:
        return_to = tenant_return_to(ctx, admin.tenant_id, body.return_to) if body.return_to else None
    except ReturnToError as exc:
        raise ApiError("invalid_redirect", str(exc)) from None
    token = ctx.links.sign(admin.tenant_id, body.user_ref, ttl_seconds=ttl, return_to=return_to)
    return ConnectLinkResponse(url=f"{ctx.settings.APP_BASE_URL}/connect?link={token}", expires_in=ttl)


@router.get("/admin/providers")
def list_providers(admin: AdminDep, ctx: CtxDep) -> list[dict[str, Any]]:
    return provider_admin.list_providers(ctx, admin.tenant_id)


@router.get("/admin/providers/{provider_id}")
def get_provider(admin: AdminDep, ctx: CtxDep, provider_id: ProviderId) -> dict[str, Any]:
    return provider_admin.get_provider_config(ctx, admin.tenant_id, provider_id)


@router.put("/admin/providers/{provider_id}")
def put_provider(
    admin: AdminDep, ctx: CtxDep, provider_id: ProviderId, config: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Create or replace; validated against the vendor plugin's schema (422 lists the bad fields)."""
    return provider_admin.upsert_provider(ctx, admin.tenant_id, provider_id, config, admin.actor)


@router.delete("/admin/providers/{provider_id}", status_code=204)
def delete_provider(admin: AdminDep, ctx: CtxDep, provider_id: ProviderId) -> Response:
    provider_admin.delete_provider(ctx, admin.tenant_id, provider_id, admin.actor)
    return Response(status_code=204)


@router.post("/admin/providers/{provider_id}/enable")
def enable_provider(admin: AdminDep, ctx: CtxDep, provider_id: ProviderId) -> dict[str, Any]:
    return provider_admin.set_enabled(ctx, admin.tenant_id, provider_id, True, admin.actor)


@router.post("/admin/providers/{provider_id}/disable")
def disable_provider(admin: AdminDep, ctx: CtxDep, provider_id: ProviderId) -> dict[str, Any]:
    return provider_admin.set_enabled(ctx, admin.tenant_id, provider_id, False, admin.actor)


@router.post("/admin/providers/{provider_id}/test")
def test_provider_connection(admin: AdminDep, ctx: CtxDep, provider_id: ProviderId) -> dict[str, Any]:
    """Discovery, then a Patient read through the provider's newest active connection."""
    return connectivity.test_provider(ctx, admin.tenant_id, provider_id, admin.actor)


@router.post("/admin/providers/{provider_id}/reactivate")
def reactivate_provider(
    admin: AdminDep, ctx: CtxDep, provider_id: ProviderId, body: ReactivateRequest | None = None
) -> dict[str, Any]:
    """After fixing the app's credentials: retry the provider's ``client_rejected`` connections, one first; 409
    ``client_rejected`` when the EHR still refuses the client (nothing else tried), else counts by outcome."""
    limit = body.limit if body else client_retry.DEFAULT_LIMIT
    return client_retry.reactivate_provider(ctx, admin.tenant_id, provider_id, admin.actor, limit)


@router.get("/admin/health")
def health(admin: AdminDep, ctx: CtxDep) -> dict[str, Any]:
    return provider_admin.health(ctx, admin.tenant_id)


@router.get("/admin/audit")
def audit_log(
    admin: AdminDep,
    ctx: CtxDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    connection_id: ConnectionIdQuery = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Events older than this event id")] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_.]+$")] = None,
) -> list[dict[str, Any]]:
    """Newest first; a full page links the next (``Link: <...before=ID>; rel="next"``), so the whole trail can be
    read however many events a busy day (or anonymous sign-in starts) adds on top."""
    with ctx.db.session() as session:
        events = list_events(
            session, admin.tenant_id, limit=limit, connection_id=connection_id, before=before, action=action
        )
    if len(events) == limit:
        params = {"limit": limit, "before": events[-1]["id"], "connection_id": connection_id, "action": action}
        query = urlencode({k: v for k, v in params.items() if v is not None})
        response.headers["Link"] = f'</api/integrations/admin/audit?{query}>; rel="next"'
    return events


@router.post("/admin/backend-connections", status_code=201)
def create_backend(admin: AdminDep, ctx: CtxDep, body: BackendRequest) -> dict[str, Any]:
    """SMART Backend Services: a system connection whose tokens are minted by client_credentials (SAL-32)."""
    return conns.create_backend_connection(
        ctx, admin.tenant_id, body.provider, body.scope, admin.actor, group_id=body.group_id
    )


@router.get("/smart/status")
def status(admin: AdminDep, ctx: CtxDep, connection_id: ConnectionIdQuery = None) -> dict[str, Any]:
    return conns.connection_status(ctx, conns.latest_connection(ctx, admin.tenant_id, connection_id))


@router.get("/smart/test/patient")
def test_patient(
    admin: AdminDep,
    ctx: CtxDep,
    connection_id: ConnectionIdQuery = None,
    patient: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9\-.]+$")] = None,
) -> dict[str, Any]:
    conn = conns.latest_connection(ctx, admin.tenant_id, connection_id)
    return connectivity.test_patient_read(ctx, conn, admin.actor, patient)


@router.post("/smart/test/note", status_code=201)
def test_note(admin: AdminDep, ctx: CtxDep, body: NoteRequest) -> dict[str, Any]:
    """Through the write gate: 409 ``WRITE_NOT_SUPPORTED`` when flags, scopes or metadata forbid it; 422
    ``note_not_accepted`` when the connection's vendor never takes such a note (``POST /api/ehr/notes``'s check: a
    draft with no visit, e.g. Epic and Oracle Health). The same test note again answers the note it stored."""
    conn = conns.latest_connection(ctx, admin.tenant_id, body.connection_id)
    return connectivity.test_note(ctx, conn, admin.actor, body.text, body.patient)


@router.post("/smart/refresh")
def refresh(admin: AdminDep, ctx: CtxDep, body: ConnectionRequest | None = None) -> dict[str, Any]:
    conn = conns.latest_connection(ctx, admin.tenant_id, body.connection_id if body else None)
    return conns.refresh(ctx, conn, admin.actor)


@router.post("/smart/disconnect")
def disconnect(admin: AdminDep, ctx: CtxDep, body: ConnectionRequest | None = None) -> dict[str, Any]:
    conn = conns.latest_connection(ctx, admin.tenant_id, body.connection_id if body else None)
    return conns.disconnect(ctx, conn, admin.actor)


@router.post("/admin/connections/{connection_id}/purge")
def purge_connection(
    admin: AdminDep,
    ctx: CtxDep,
    connection_id: Annotated[str, Path(min_length=1, max_length=64, pattern=_CONNECTION_ID)],
    body: PurgeRequest | None = None,
) -> dict[str, Any]:
    """Remove the connection's synced data (landing, warehouse, attachments, sync state), audited with counts;
    409 ``connection_not_disconnected`` for an active one unless ``disconnect`` is true (docs/RETENTION.md)."""
    return purges.purge(ctx, admin.tenant_id, connection_id, admin.actor, disconnect=bool(body and body.disconnect))


@router.get("/admin/retention")
def get_retention(admin: AdminDep, ctx: CtxDep) -> dict[str, Any]:
    return purges.get_retention(ctx, admin.tenant_id)


@router.put("/admin/retention")
def put_retention(admin: AdminDep, ctx: CtxDep, body: RetentionRequest) -> dict[str, Any]:
    """How long the tenant keeps a disconnected connection's data; the daily retention job purges what is due."""
    return purges.set_retention(ctx, admin.tenant_id, body.data_retention_days, admin.actor)
