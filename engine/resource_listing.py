"""A read model of one connection's synced resources, paged by key, for the auth service (which may not import
``warehouse``): ``list_resources`` reads ``fhir_resources`` and ``fhir_attachments`` read-only.

Pages are keyset pages on ``(resource_type, id)``: a page starts strictly after the last key of the previous
one, so rows are never skipped or repeated when rows are added meanwhile, and a deep page costs what the first
costs (PostgreSQL walks the primary key; DuckDB's zone maps prune by connection). Tombstoned rows are left out.

The reader never waits long: the warehouse is opened with ``wait_s`` as its lock timeout (DuckDB: the shared
file lock, then DuckDB's own lock; PostgreSQL: ``lock_timeout``), and a warehouse still busy after that raises
``WarehouseBusyError`` so the caller can answer "retry later" instead of hanging a request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from engine.attachments import absolute_url, attachment_refs
from engine.errors import SyncError
from warehouse import Warehouse, open_warehouse
from warehouse.errors import WarehouseLockTimeoutError, WarehouseNotCreatedError, WarehouseTargetError

__all__ = [
    "DEFAULT_MAX_PAGE_BYTES",
    "ListedAttachment",
    "ListedResource",
    "ResourcePage",
    "WarehouseBusyError",
    "WarehouseUnavailableError",
    "list_resources",
]

logger = logging.getLogger(__name__)
#: A page stops early once its resources reach this many bytes of JSON (one resource may be up to 64 MB).
DEFAULT_MAX_PAGE_BYTES = 8 * 1024 * 1024
_URL_CHUNK = 500


class WarehouseBusyError(SyncError):
    """Another process held the warehouse (a sync writing, an analyst's session) for longer than the wait."""

    code = "warehouse_busy"


class WarehouseUnavailableError(SyncError):
    """The warehouse cannot be opened (server down, bad target); the message names the cause, never a secret."""

    code = "warehouse_unavailable"


@dataclass(frozen=True)
class ListedAttachment:
    """An attachment a resource links to, and whether a sync stored a copy of it (``fhir_attachments``)."""

    url: str
    content_type: str | None
    size: int | None
    downloaded: bool
    sha256: str | None


@dataclass(frozen=True)
class ListedResource:
    resource_type: str
    id: str
    version_id: str | None
    last_updated: datetime | None
    resource: dict[str, Any]
    attachments: tuple[ListedAttachment, ...]
    #: The resource as stored, to serve as is: parsed, a decimal's trailing zeros and digits past a double's are lost
    resource_json: str


@dataclass(frozen=True)
class ResourcePage:
    """``items`` in key order; ``next_after`` is the key to continue after, ``None`` on the last page."""

    items: list[ListedResource]
    next_after: tuple[str, str] | None


@dataclass(frozen=True)
class _Row:
    resource_type: str
    id: str
    version_id: str | None
    last_updated: datetime | None
    resource: dict[str, Any]
    size: int
    text: str


def _aware(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _page_sql(resource_type: str | None, after: tuple[str, str] | None) -> tuple[str, list[Any]]:
    where, params = ["connection_id = %s", "deleted_at IS NULL", "resource IS NOT NULL"], []
    if resource_type is not None:
        where.append("resource_type = %s")
        params.append(resource_type)
    if after is not None:
        where.append("(resource_type, id) > (%s, %s)")
        params.extend(after)
    sql = (
        "SELECT resource_type, id, version_id, last_updated, CAST(resource AS TEXT) AS resource "
        f"FROM fhir_resources WHERE {' AND '.join(where)} ORDER BY resource_type, id LIMIT %s"
    )
    return sql, params


def _rows(
    wh: Warehouse, connection_id: str, resource_type: str | None, after: tuple[str, str] | None, limit: int
) -> Generator[_Row, None, None]:
    """Streamed, so a page cut short by its byte budget never parses the rest; closing this generator closes
    the warehouse read under it (the next read needs it closed: one read at a time per warehouse object)."""
    sql, params = _page_sql(resource_type, after)
    reading = cast(Generator[dict[str, Any], None, None], wh.iter_rows(sql, [connection_id, *params, limit + 1]))
    with contextlib.closing(reading) as found:
        for row in found:
            text = row["resource"]
            yield _Row(
                resource_type=row["resource_type"],
                id=row["id"],
                version_id=row["version_id"],
                last_updated=_aware(row["last_updated"]),
                resource=orjson.loads(text),
                size=len(text),
                text=text,
            )


def _select_page(rows: Iterator[_Row], limit: int, max_bytes: int) -> tuple[list[_Row], bool]:
    """Up to ``limit`` rows and about ``max_bytes`` of JSON (always at least one row); whether more follow."""
    page: list[_Row] = []
    size = 0
    for row in rows:
        if len(page) >= limit or (page and size + row.size > max_bytes):
            return page, True
        page.append(row)
        size += row.size
    return page, False


def _stored(wh: Warehouse, connection_id: str, urls: set[str]) -> dict[str, str]:
    """url -> sha256 of the attachments of ``urls`` the sync stored for this connection."""
    found: dict[str, str] = {}
    ordered = sorted(urls)
    for start in range(0, len(ordered), _URL_CHUNK):
        chunk = ordered[start : start + _URL_CHUNK]
        marks = ", ".join(["%s"] * len(chunk))
        sql = f"SELECT url, sha256 FROM fhir_attachments WHERE connection_id = %s AND url IN ({marks})"
        found.update((r["url"], r["sha256"]) for r in wh.iter_rows(sql, [connection_id, *chunk]))
    return found


def _with_attachments(wh: Warehouse, connection_id: str, fhir_base: str, rows: list[_Row]) -> list[ListedResource]:
    """Each row with its attachment links; a link is ``downloaded`` when ``fhir_attachments`` holds its URL as the
    sync resolved it (relative URLs against the connection's FHIR base, ``engine.attachments.absolute_url``)."""
    refs = {(row.resource_type, row.id): attachment_refs(row.resource) for row in rows}
    wanted = {absolute_url(fhir_base, ref.url) for found in refs.values() for ref in found}
    stored = _stored(wh, connection_id, wanted) if wanted else {}
    out: list[ListedResource] = []
    for row in rows:
        links = []
        for ref in refs[(row.resource_type, row.id)]:
            sha = stored.get(absolute_url(fhir_base, ref.url))
            links.append(ListedAttachment(ref.url, ref.content_type, ref.size, sha is not None, sha))
        out.append(
            ListedResource(
                row.resource_type, row.id, row.version_id, row.last_updated, row.resource, tuple(links), row.text
            )
        )
    return out


def list_resources(
    warehouse_target: str,
    connection_id: str,
    *,
    fhir_base: str,
    resource_type: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int = 50,
    wait_s: float = 2.0,
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
) -> ResourcePage:
    """One page of ``connection_id``'s live resources (of ``resource_type`` when given) after key ``after``.

    The caller has already checked that the connection is the caller's (the warehouse does not know tenants'
    rights). A warehouse never created (nothing synced yet) is an empty page."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    try:
        with open_warehouse(warehouse_target, read_only=True, lock_timeout_s=wait_s) as wh:
            with contextlib.closing(_rows(wh, connection_id, resource_type, after, limit)) as found:
                rows, more = _select_page(found, limit, max_page_bytes)
            items = _with_attachments(wh, connection_id, fhir_base, rows)
    except WarehouseNotCreatedError:
        return ResourcePage([], None)
    except WarehouseLockTimeoutError as exc:
        logger.info("resource listing of %s: warehouse busy (%s)", connection_id, exc)
        raise WarehouseBusyError(f"the warehouse stayed busy for {wait_s:g}s (a sync is writing); retry") from exc
    except WarehouseTargetError as exc:
        logger.warning("resource listing of %s: warehouse unavailable (%s)", connection_id, type(exc).__name__)
        raise WarehouseUnavailableError("the warehouse cannot be opened now; retry later") from exc
    next_after = (items[-1].resource_type, items[-1].id) if more and items else None
    return ResourcePage(items, next_after)
