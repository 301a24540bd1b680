"""A paged manifest (``link`` with ``relation`` ``next``, Bulk Data 3.0+) gathered into one before anything lands,
so ``transactionTime`` never becomes the next ``_since`` while files of a later page are still unseen (BDX-14)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
import orjson

from connectors.bulk.manifest import (
    MAX_MANIFEST_FILES,
    BulkManifest,
    files_over_limit,
    page_objects_over_limit,
    parse_manifest,
)
from connectors.bulk.wire import as_bulk_error, read_bounded
from connectors.errors import (
    BulkExportError,
    BulkStatusUnavailableError,
    FhirError,
    FhirUnauthorizedError,
    RateLimitedError,
    ResponseTooLargeError,
    SecurityPolicyError,
)
from connectors.fhir._session import FhirSession, TokenRule
from connectors.http import redact_url, resolve_checked_url
from connectors.transport.answers import json_object_text, json_text
from connectors.transport.bounds import BodyBounds

__all__ = ["MAX_MANIFEST_PAGES", "ManifestPageReader", "gather_manifest_pages"]

#: The most pages one manifest may span: a server whose ``next`` links never end is refused, not followed forever.
MAX_MANIFEST_PAGES = 1000
#: Why a later page answering 200 with no JSON object is asked again (as the status URL is, ``wire.UNREADABLE_200``):
#: far likelier a proxy's or gateway's page, or a body cut in transit, than the server's considered answer.
UNREADABLE_PAGE = (
    "it answered 200 with a body that is not a JSON object (a proxy's or gateway's page, or a body cut short), "
    "not a manifest page"
)


def gather_manifest_pages(
    first: BulkManifest,
    first_url: str,
    fetch_page: Callable[[str], BulkManifest],
    max_files: int = MAX_MANIFEST_FILES,
) -> BulkManifest:
    """``first`` with the files of every page its ``next`` links lead to. Pages must agree on ``transactionTime``
    and ``requiresAccessToken``; a link that repeats a page, more than :data:`MAX_MANIFEST_PAGES` pages, or more than
    ``max_files`` files on them all is an invalid manifest (BulkExportError with status 200, like any other)."""
    output, error, deleted = list(first.output), list(first.error), list(first.deleted)
    next_page, url, seen = first.next_page, first_url, {first_url}
    while True:
        if (too_many := files_over_limit(len(output) + len(error) + len(deleted), max_files)) is not None:
            raise too_many
        if next_page is None:
            break
        url = resolve_checked_url(next_page, url, f"its page {len(seen)} 'next' link", _invalid)
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


@dataclass
class ManifestPageReader:
    """Reads the later pages of one manifest as the status URL is read: the token on the FHIR server's origin only
    (a link elsewhere is an invalid manifest), every link vetted by ``url_guard``, and all later pages together held
    to ``bounds.max_bytes`` (EHRSYNC_MAX_RESPONSE_BYTES), the limit one manifest had before it could be paged.

    A transient answer (429, 5xx, a ``transient`` OperationOutcome, or a 200 that is no JSON object) after the
    retries is BulkStatusUnavailableError: the job stays resumable and the next run reads every page again (nothing of
    the earlier pages is recorded before the last page is read). A page that is gone (404/410) or otherwise
    refused makes the manifest invalid. FhirUnauthorizedError propagates (the client's 401 handling)."""

    session: FhirSession
    bounds: BodyBounds
    url_guard: Callable[[str], None]
    max_files: int = MAX_MANIFEST_FILES  # on any one page; ``gather_manifest_pages`` holds all pages together to it
    _read: int = 0

    def __call__(self, url: str) -> BulkManifest:
        """Page ``url``; a 200 that is no JSON object is asked again within the retry policy's attempts, as a poll of
        the status URL is (:class:`~connectors.bulk.pacing.PollPacer`), then BulkStatusUnavailableError."""
        try:
            self.session.check_token_destination(url, TokenRule.REQUIRE_ORIGIN)
        except SecurityPolicyError as exc:
            raise _invalid(f"its next link {redact_url(url)} is on another origin than the FHIR server") from exc
        policy, unreadable = self.session.retry, 0
        while (page := self._read_page(url)) is None:
            unreadable += 1
            if unreadable >= policy.max_attempts:
                raise BulkStatusUnavailableError(
                    f"bulk manifest page {redact_url(url)} kept failing transiently ({unreadable} times: "
                    f"{UNREADABLE_PAGE}); the job is kept and the next run reads the manifest again",
                    url=redact_url(url),
                )
            policy.sleep(policy.backoff_delay(unreadable - 1))
        return page

    def _read_page(self, url: str) -> BulkManifest | None:
        """One request for page ``url``: the page, or None for a 200 that is no JSON object."""
        try:
            return self.session.request(
                "GET",
                url,
                headers={"Accept": "application/json"},
                token_rule=TokenRule.REQUIRE_ORIGIN,
                handler=self._parse,
                url_guard=self.url_guard,
                bounds=self.bounds,
            )
        except FhirUnauthorizedError:
            raise
        except RateLimitedError as exc:
            raise _unavailable(exc) from exc
        except FhirError as exc:
            if exc.is_transient:
                raise _unavailable(exc) from exc
            raise _invalid(f"page {redact_url(url)} answered HTTP {exc.status}") from exc

    def _parse(self, response: httpx.Response) -> BulkManifest | None:
        """The page, or None when its body is no JSON object (a gateway's page, a body cut short): not counted against
        the later pages' byte limit, since it is no part of the manifest."""
        limit = self.bounds.max_bytes
        try:
            body = read_bounded(response, None if limit is None else limit - self._read).content
        except ResponseTooLargeError as exc:
            too_many = f"its later pages together exceed the {limit}-byte limit (EHRSYNC_MAX_RESPONSE_BYTES)"
            raise _invalid(too_many) from exc
        if (too_many_files := page_objects_over_limit(body, self.max_files)) is not None:  # before decoding it
            raise too_many_files
        try:  # a body that does not begin as an object (a JSON array, a gateway's page) is never decoded
            page = orjson.loads(json_text(body)) if json_object_text(body) else None  # RFC 8259 §8.1: BOM ignored
        except orjson.JSONDecodeError:
            page = None
        if not isinstance(page, dict):
            return None
        self._read += len(body)
        return parse_manifest(page, later_page=True, max_files=self.max_files, base_url=str(response.url))


def _unavailable(exc: FhirError) -> BulkStatusUnavailableError:
    bulk = as_bulk_error("bulk manifest page kept failing transiently; the next run reads the manifest again", exc)
    return BulkStatusUnavailableError(bulk.message, status=bulk.status, url=bulk.url)


def _invalid(reason: str) -> BulkExportError:
    return BulkExportError(f"invalid bulk manifest: {reason}", status=200)
