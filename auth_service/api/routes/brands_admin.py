"""Admin API: the SMART brands bundles behind a tenant's connect page (load, list, remove)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from auth_service.api.deps import AdminDep, CtxDep
from auth_service.api.errors import ApiError
from auth_service.services import brand_admin
from connectors.smart.brands import MAX_BUNDLE_BYTES

__all__ = ["router"]

router = APIRouter(prefix="/api/integrations/admin/brands", tags=["admin"])
Source = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]


async def _body(request: Request) -> bytes:
    """The request body, refused as soon as it passes the bundle size limit (never buffered past it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BUNDLE_BYTES:
            raise ApiError("validation_error", f"brands bundle is over the {MAX_BUNDLE_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.put("/{source}")
async def put_brands(request: Request, admin: AdminDep, ctx: CtxDep, source: Source) -> dict[str, Any]:
    """Load a brands bundle (the request body, JSON) as directory ``source``, replacing what it held."""
    raw = await _body(request)
    return await run_in_threadpool(brand_admin.load_brands, ctx, admin.tenant_id, source, raw, admin.actor)


@router.get("")
def list_brands(admin: AdminDep, ctx: CtxDep) -> list[dict[str, Any]]:
    return brand_admin.list_brands(ctx, admin.tenant_id)


@router.delete("/{source}", status_code=204)
def delete_brands(admin: AdminDep, ctx: CtxDep, source: Source) -> Response:
    brand_admin.delete_brands(ctx, admin.tenant_id, source, admin.actor)
    return Response(status_code=204)
