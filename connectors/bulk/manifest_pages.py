"""A paged manifest (``link`` with ``relation`` ``next``, Bulk Data 3.0+) gathered into one before anything lands,
so ``transactionTime`` never becomes the next ``_since`` while files of a later page are still unseen (BDX-14)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import httpx
import orjson

from connectors.bulk.manifest import BulkManifest, parse_manifest
from connectors.bulk.wire import as_bulk_error, read_bounded
from connectors.errors import BulkExportError, FhirError, FhirUnauthorizedError
from connectors.fhir._session import FhirSession, TokenRule
from connectors.http import redact_url, resolve_url
from connectors.transport.bounds import BodyBounds

__all__ = ["MAX_MANIFEST_PAGES", "fetch_manifest_page", "gather_manifest_pages"]

#: The most pages one manifest may span: a server whose ``next`` links never end is refused, not followed forever.
MAX_MANIFEST_PAGES = 1000


def gather_manifest_pages(
    first: BulkManifest, first_url: str, fetch_page: Callable[[str], BulkManifest]
) -> BulkManifest:
    """``first`` with the files of every page its ``next`` links lead to. Pages must agree on ``transactionTime``
    and ``requiresAccessToken``; a link that repeats a page, or more than :data:`MAX_MANIFEST_PAGES` pages, is an
    invalid manifest (BulkExportError with status 200, like any other)."""
    output, error, deleted = list(first.output), list(first.error), list(first.deleted)
    next_page, url, seen = first.next_page, first_url, {first_url}
    while next_page is not None:
        url = resolve_url(next_page, url)
        if url in seen:
            raise _invalid(f"its next link {redact_url(url)} leads back to a page already read")
        if len(seen) >= MAX_MANIFEST_PAGES:
            raise _invalid(f"it goes on past {MAX_MANIFEST_PAGES} pages")
        seen.add(url)
        page = fetch_page(url)
        if page.transaction_time != first.transaction_time:
            raise _invalid(f"page {len(seen)} has another transactionTime than the first")
        if page.requires_access_token != first.requires_access_token:
            raise _invalid(f"page {len(seen)} has another requiresAccessToken than the first")
        output += page.output
        error += page.error
        deleted += page.deleted
        next_page = page.next_page
    return replace(first, output=output, error=error, deleted=deleted, next_page=None)


def fetch_manifest_page(session: FhirSession, url: str, bounds: BodyBounds) -> BulkManifest:
    """A later page of a paged manifest, fetched as the status URL is: the token on its origin only, the body under
    the JSON byte limit. FhirUnauthorizedError propagates (the client's 401 handling); other failures are
    BulkExportError."""

    def handle(response: httpx.Response) -> BulkManifest:
        body = read_bounded(response, bounds.max_bytes).content
        try:
            return parse_manifest(orjson.loads(body), later_page=True)
        except orjson.JSONDecodeError as exc:
            raise BulkExportError("bulk manifest page is not JSON", status=200, url=redact_url(url)) from exc

    try:
        return session.request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            token_rule=TokenRule.REQUIRE_ORIGIN,
            handler=handle,
            bounds=bounds,
        )
    except FhirUnauthorizedError:
        raise
    except FhirError as exc:
        raise as_bulk_error("bulk manifest page failed", exc) from exc


def _invalid(reason: str) -> BulkExportError:
    return BulkExportError(f"invalid bulk manifest: {reason}", status=200)
