"""``GET /api/ehr/resources``: a connection's synced resources, read from the warehouse through the engine's read
model (``engine.resource_listing``; the auth service never imports ``warehouse``), keyset-paged.

The tenant check happens here, against the app database, before the warehouse is touched: another tenant's
connection is ``not_connected``, exactly like a connection that does not exist. Input is checked here too, so a
bad ``limit``, ``resourceType`` or ``cursor`` is a 400 ``invalid_request`` naming the parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from auth_service.core.page_cursor import CursorSigner, InvalidCursorError, PageQuery
from auth_service.services.connections import get_connection
from auth_service.services.context import ServiceContext
from auth_service.services.errors import InvalidInputError, WarehouseReadError
from engine.resource_listing import (
    ListedResource,
    WarehouseBusyError,
    WarehouseUnavailableError,
    list_resources,
)

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ResourceQuery", "list_connection_resources", "parse_query"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
BUSY_RETRY_AFTER_S = 5
UNAVAILABLE_RETRY_AFTER_S = 30
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_DIGITS = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True)
class ResourceQuery:
    connection_id: str
    resource_type: str | None
    limit: int
    cursor: str | None


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise InvalidInputError(f"give '{name}' once")
    return values[0] if values else None


def parse_query(params: dict[str, list[str]]) -> ResourceQuery:
    """The query string's parameters (each name's values), checked; the message names the bad parameter."""
    connection_id = _one(params, "connectionId")
    if not connection_id:
        raise InvalidInputError("give 'connectionId'")
    if not _ID.fullmatch(connection_id):
        raise InvalidInputError("'connectionId' is malformed (1-64 letters, digits, '_', '.', ':' or '-')")
    resource_type = _one(params, "resourceType")
    if resource_type is not None and not _TYPE.fullmatch(resource_type):
        raise InvalidInputError("'resourceType' must be a FHIR resource type name such as 'Observation'")
    raw_limit = _one(params, "limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise InvalidInputError(f"'limit' must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")
        limit = int(raw_limit)
    cursor = _one(params, "cursor")
    if cursor is not None and not cursor:
        raise InvalidInputError("'cursor' is empty: leave it out for the first page")
    return ResourceQuery(connection_id, resource_type, limit, cursor)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _item(item: ListedResource) -> dict[str, Any]:
    return {
        "resourceType": item.resource_type,
        "id": item.id,
        "versionId": item.version_id,
        "lastUpdated": _iso(item.last_updated),
        "resource": orjson.Fragment(item.resource_json),  # as stored: numbers exactly as the EHR wrote them
        "attachments": [
            {
                "url": a.url,
                "contentType": a.content_type,
                "size": a.size,
                "downloaded": a.downloaded,
                "sha256": a.sha256,
            }
            for a in item.attachments
        ],
    }


def _cursor_signer(ctx: ServiceContext) -> CursorSigner:
    """Signs under the active key and verifies under the old keys too, so a rotation does not cut a host app's
    paging short. Each key's secret is its base64 text made from its bytes (either alphabet the documented
    generators print), so a key set with a trailing newline matches after its rotation; never a placeholder's."""
    signing, *verifying = ctx.keys.verifying_texts
    return CursorSigner(signing, old_secrets=verifying)


def list_connection_resources(ctx: ServiceContext, tenant_id: str, query: ResourceQuery) -> dict[str, Any]:
    """One page of the connection's live resources in ``(resourceType, id)`` order, and ``nextCursor``."""
    conn = get_connection(ctx, tenant_id, query.connection_id)  # not_connected for another tenant's connection
    signer = _cursor_signer(ctx)
    bound = PageQuery(tenant_id, conn.id, query.resource_type)
    try:
        after = signer.decode(query.cursor, bound) if query.cursor is not None else None
    except InvalidCursorError as exc:
        raise InvalidInputError(str(exc)) from None
    try:
        page = list_resources(
            ctx.settings.warehouse_url,
            conn.id,
            fhir_base=conn.fhir_base,
            resource_type=query.resource_type,
            after=after,
            limit=query.limit,
            wait_s=ctx.settings.WAREHOUSE_READ_WAIT_SECONDS,
        )
    except WarehouseBusyError as exc:
        raise WarehouseReadError(str(exc), code="warehouse_busy", retry_after_s=BUSY_RETRY_AFTER_S) from exc
    except WarehouseUnavailableError as exc:
        raise WarehouseReadError(
            str(exc), code="warehouse_unavailable", retry_after_s=UNAVAILABLE_RETRY_AFTER_S
        ) from exc
    return {
        "connectionId": conn.id,
        "resourceType": query.resource_type,
        "items": [_item(item) for item in page.items],
        "nextCursor": signer.encode(bound, page.next_after) if page.next_after is not None else None,
    }
