"""One bulk file to disk, verified (BDX-16..20): token rule, gzip, expiry, byte limit, free disk, truncation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx

from connectors.bulk.ndjson import truncation_of
from connectors.bulk.wire import as_bulk_error
from connectors.errors import (
    BulkFileExpiredError,
    BulkFileTooLargeError,
    BulkFileTruncatedError,
    ContentTooLargeError,
    FhirError,
    FhirUnauthorizedError,
)
from connectors.fhir._session import FhirSession, TokenRule
from connectors.fhir.download import Downloaded, stream_to_file
from connectors.http import redact_url

__all__ = ["NDJSON", "TRUNCATION_ATTEMPTS", "download_file"]

logger = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
#: How many times one file is fetched when it keeps arriving cut short.
TRUNCATION_ATTEMPTS = 3


def download_file(
    session: FhirSession,
    item_url: str,
    dest: Path,
    *,
    requires_token: bool,
    url_guard: Callable[[str], None],
    max_bytes: int | None = None,
    min_free_bytes: int = 0,
    attempts: int = TRUNCATION_ATTEMPTS,
) -> Path:
    """Fetch ``item_url`` to ``dest``; a body cut short (:func:`truncation_of`) is fetched again, up to
    ``attempts`` times, then BulkFileTruncatedError (never a truncated file handed on as data)."""
    problem = ""
    for attempt in range(max(1, attempts)):
        if attempt:
            session.retry.sleep(session.retry.backoff_delay(attempt - 1))
        got = _fetch(session, item_url, dest, requires_token, url_guard, max_bytes, min_free_bytes)
        cut = truncation_of(got.path, got.wire_bytes, got.declared_bytes)
        if cut is None:
            return got.path
        problem = cut
        got.path.unlink(missing_ok=True)
        logger.warning("bulk file arrived truncated, fetching it again", extra={"url": redact_url(item_url)})
    raise BulkFileTruncatedError(
        f"bulk file {redact_url(item_url)} arrived truncated on each of {max(1, attempts)} attempts ({problem}); "
        "the next run fetches it again",
        url=redact_url(item_url),
    )


def _fetch(
    session: FhirSession,
    item_url: str,
    dest: Path,
    requires_token: bool,
    url_guard: Callable[[str], None],
    max_bytes: int | None,
    min_free_bytes: int,
) -> Downloaded:
    rule = TokenRule.REQUIRE_ORIGIN if requires_token else TokenRule.NEVER

    def write(response: httpx.Response) -> Downloaded:
        """Only the file's own body is held to the per-file limit: a token refresh made on the way (its
        discovery document over EHRSYNC_MAX_RESPONSE_BYTES) fails as itself, not as an oversized file."""
        try:
            return stream_to_file(response, dest, max_bytes, min_free_bytes=min_free_bytes, scratch=True)
        except ContentTooLargeError as exc:
            raise BulkFileTooLargeError(
                f"bulk file {redact_url(item_url)} is larger than the {max_bytes}-byte limit per file "
                "(EHRSYNC_BULK_MAX_FILE_BYTES); raise the limit and run again, the file is fetched then"
            ) from exc

    try:
        return session.request(
            "GET",
            item_url,
            headers={"Accept": NDJSON, "Accept-Encoding": "gzip"},
            token_rule=rule,
            handler=write,
            max_redirects=5,
            url_guard=url_guard,
        )
    except FhirError as exc:
        if exc.status in (404, 410):
            raise BulkFileExpiredError(
                f"bulk file gone (HTTP {exc.status}); re-run the export from the same _since",
                status=exc.status,
                operation_outcome=exc.operation_outcome,
                url=exc.url,
            ) from exc
        if isinstance(exc, FhirUnauthorizedError):
            raise
        raise as_bulk_error("bulk file download failed", exc) from exc
