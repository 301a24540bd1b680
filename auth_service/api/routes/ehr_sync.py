"""Sync API for host apps: start a connection's sync in Dagster and follow it (tenant-scoped API keys)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from auth_service.api.deps import AdminDep, CtxDep
from auth_service.api.errors import ApiError
from auth_service.services import sync_api, sync_bulk
from auth_service.services.dagster_client import DagsterGraphQLClient

__all__ = ["get_dagster", "router"]

router = APIRouter(tags=["sync"])
_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def get_dagster(request: Request) -> DagsterGraphQLClient:
    """The app's GraphQL client of the Dagster webserver (built in ``create_app``)."""
    client: DagsterGraphQLClient = request.app.state.dagster
    return client


DagsterDep = Annotated[DagsterGraphQLClient, Depends(get_dagster)]


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connectionId: Annotated[str, _ID]
    mode: Literal["incremental", "full"] = "incremental"


class BulkStartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connectionId: Annotated[str, _ID]


IdQuery = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@router.post("/api/ehr/sync", status_code=202)
def start_sync(admin: AdminDep, ctx: CtxDep, dagster: DagsterDep, body: SyncRequest) -> dict[str, Any]:
    """Submit a Dagster run for the connection's partition; 409 if it is not active, 503 if Dagster is down."""
    return sync_api.start_sync(ctx, dagster, admin.tenant_id, body.connectionId, body.mode, admin.actor)


@router.get("/api/ehr/sync", response_model=None)
def get_sync(
    admin: AdminDep,
    ctx: CtxDep,
    dagster: DagsterDep,
    syncId: IdQuery = None,
    connectionId: IdQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any] | list[dict[str, Any]]:
    """``?syncId=`` one run (reconciled with Dagster); ``?connectionId=`` the history, newest first."""
    if bool(syncId) == bool(connectionId):
        raise ApiError("invalid_request", "give exactly one of 'syncId' or 'connectionId'")
    if syncId:
        return sync_api.sync_status(ctx, dagster, admin.tenant_id, syncId)
    return sync_api.sync_history(ctx, dagster, admin.tenant_id, connectionId or "", limit)


@router.post("/api/integrations/ehr/bulk/start", status_code=202)
def start_bulk(admin: AdminDep, ctx: CtxDep, dagster: DagsterDep, body: BulkStartRequest) -> dict[str, Any]:
    """Bulk ``$export`` of a backend/group connection; 409 ``bulk_not_enabled`` otherwise."""
    return sync_api.start_bulk(ctx, dagster, admin.tenant_id, body.connectionId, admin.actor)


@router.get("/api/integrations/ehr/bulk/status")
def bulk_status(
    admin: AdminDep,
    ctx: CtxDep,
    dagster: DagsterDep,
    syncId: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")],
) -> dict[str, Any]:
    """The run's status plus its Bulk job: status URL presence, transactionTime, files done/total."""
    return sync_bulk.bulk_status(ctx, dagster, admin.tenant_id, syncId)
