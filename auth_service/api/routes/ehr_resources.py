"""``GET /api/ehr/resources``: a connection's synced resources for host apps (tenant-scoped API keys).

The query string is read here and checked by the service (``auth_service/services/resources.py``), so every bad
parameter is a 400 ``invalid_request`` naming it; the parameters are documented in the OpenAPI operation below.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from auth_service.api.deps import AdminDep, CtxDep
from auth_service.services import resources

__all__ = ["router"]

router = APIRouter(tags=["resources"])


class AttachmentOut(BaseModel):
    url: str = Field(description="the attachment's URL as the resource names it")
    contentType: str | None
    size: int | None = Field(description="the size the resource declares, if any")
    downloaded: bool = Field(description="whether a sync stored a copy of it")
    sha256: str | None = Field(description="the stored copy's content hash, when downloaded")


class ResourceOut(BaseModel):
    resourceType: str
    id: str
    versionId: str | None
    lastUpdated: str | None = Field(description="meta.lastUpdated as stored (UTC)")
    resource: dict[str, Any] = Field(description="the FHIR resource as last synced")
    attachments: list[AttachmentOut] = Field(
        description="DocumentReference.content.attachment / DiagnosticReport.presentedForm links with a url"
    )


class ResourcePageOut(BaseModel):
    connectionId: str
    resourceType: str | None
    items: list[ResourceOut]
    nextCursor: str | None = Field(description="pass as 'cursor' for the next page; null on the last page")


_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "connectionId",
        "in": "query",
        "required": True,
        "description": "a connection of the caller's tenant (another tenant's answers 404 not_connected)",
        "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9_.:-]+$"},
    },
    {
        "name": "resourceType",
        "in": "query",
        "required": False,
        "description": "only this FHIR resource type (default: every type, ordered by type then id)",
        "schema": {"type": "string", "pattern": "^[A-Z][A-Za-z]{0,63}$"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"page size, 1..{resources.MAX_LIMIT} (default {resources.DEFAULT_LIMIT}); a page of large "
        "resources may stop earlier (about 8 MB of JSON)",
        "schema": {"type": "integer", "minimum": 1, "maximum": resources.MAX_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "the previous page's nextCursor, unchanged and with the same connectionId/resourceType",
        "schema": {"type": "string", "minLength": 1, "maxLength": 2048},
    },
]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid_request: a parameter is missing or malformed (the message names it)"},
    401: {"description": "unauthorized: no or unknown API key"},
    404: {"description": "not_connected: no such connection for this tenant"},
    503: {
        "description": "warehouse_busy (a sync holds the warehouse) or warehouse_unavailable; see Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    },
}


@router.get(
    "/api/ehr/resources",
    response_model=ResourcePageOut,
    responses=_RESPONSES,
    openapi_extra={"parameters": _PARAMETERS},
)
def list_resources(request: Request, admin: AdminDep, ctx: CtxDep) -> Response:
    """A connection's synced resources, keyset-paged on (resourceType, id): each with versionId, lastUpdated,
    the resource, and its attachment links with whether each was downloaded. Tombstoned resources are left out.

    Each resource is sent as stored (orjson writes it as is), so a decimal keeps its precision (``7.10``, 23 digits)
    and nothing is parsed and written again; ``ResourcePageOut`` describes the answer."""
    params = {name: request.query_params.getlist(name) for name in request.query_params}
    query = resources.parse_query(params)
    page = resources.list_connection_resources(ctx, admin.tenant_id, query)
    return Response(orjson.dumps(page), media_type="application/json")
