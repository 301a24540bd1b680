"""One bulk file to disk, verified (BDX-16..20): token rule, gzip, expiry, byte limit, free disk, truncation, a
low-speed limit in place of a request deadline (a file may rightly stream for hours; a server trickling it may not),
and a generous deadline for the whole file (a server keeping it just above the low-speed limit may not either): it
runs from the file's first attempt, waits between attempts included, and no wait is begun that would end past it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx

from connectors.bulk.file_limits import (
    DEFAULT_MAX_FILE_BYTES,
    FILE_DEADLINE_ENV,
    LOW_SPEED_RATE_ENV,
    LOW_SPEED_WINDOW_ENV,
)
from connectors.bulk.ndjson import truncation_of
from connectors.bulk.wire import as_bulk_error
from connectors.errors import (
    BulkFileDeadlineError,
    BulkFileExpiredError,
    BulkFileTooLargeError,
    BulkFileTooSlowError,
    BulkFileTruncatedError,
    ContentTooLargeError,
    FhirError,
    FhirForbiddenError,
    FhirUnauthorizedError,
    FhirWithoutTokenRefusedError,
    GzipPastContentError,
    TransferDeadlineError,
    TransferTooSlowError,
)
from connectors.fhir._session import FhirSession, TokenRule
from connectors.fhir.download import Downloaded, stream_to_file, wire_allowance
from connectors.http import RetryPolicy, redact_url
from connectors.transport.bounds import BodyBounds
from connectors.transport.low_speed import LowSpeedLimit
from connectors.transport.transfer import TransferDeadline

__all__ = [
    "NDJSON",
    "TRUNCATION_ATTEMPTS",
    "download_file",
    "file_deadline",
    "file_too_large",
    "pause_before_fetch",
]

logger = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
#: How many times one file is fetched when it keeps arriving cut short (or too slowly).
TRUNCATION_ATTEMPTS = 3
_SLOW_VARIABLES = f"{LOW_SPEED_RATE_ENV} over {LOW_SPEED_WINDOW_ENV}"


def file_deadline(limit_s: float | None) -> TransferDeadline | None:
    """A new deadline of ``limit_s`` (None: none) for one file, every attempt and wait together: the engine keeps
    one per file across its fetches of it (:func:`pause_before_fetch` between them)."""
    return None if limit_s is None else TransferDeadline(limit_s)


def pause_before_fetch(retry: RetryPolicy, url: str, deadline: TransferDeadline | None, retry_no: int) -> None:
    """Sleep ``retry``'s backoff for the ``retry_no``-th (0-based) fetch of ``url`` again; a wait that would end
    past the file's ``deadline`` raises BulkFileDeadlineError now instead."""
    delay = retry.backoff_delay(retry_no)
    if deadline is not None:
        try:
            deadline.check_wait("GET", url, delay)
        except TransferDeadlineError as exc:
            raise _overdue(redact_url(url), deadline, exc) from exc
    retry.sleep(delay)


def download_file(
    session: FhirSession,
    item_url: str,
    dest: Path,
    *,
    requires_token: bool,
    url_guard: Callable[[str], None],
    max_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
    min_free_bytes: int = 0,
    attempts: int = TRUNCATION_ATTEMPTS,
    bounds: BodyBounds | None = None,
    low_speed: LowSpeedLimit | None = None,
    deadline: TransferDeadline | None = None,
) -> Path:
    """Fetch ``item_url`` to ``dest``; a body cut short (:func:`truncation_of`) or arriving slower than
    ``low_speed`` is fetched again, up to ``attempts`` times, then BulkFileTruncatedError or BulkFileTooSlowError
    (never a truncated file handed on as data, never a worker held by a trickle). A refusal (403, or 401 to a request
    sent without the token) is asked once more, outside those attempts; refused twice in a row, the file has expired
    (BulkFileExpiredError). ``bounds``' deadline covers each attempt up to the answer's headers; the body has only
    ``low_speed``. ``deadline`` (None: none; begun here unless an earlier fetch of the same file began it, as the
    engine's fetch of a file short of its manifest's count again) covers every attempt and every wait together:
    past it, or at a wait that would end past it, BulkFileDeadlineError."""
    file_bounds = replace(bounds or BodyBounds(None, None), max_bytes=None, body_deadline=False, low_speed=low_speed)
    if deadline is not None:  # one clock reading per chunk serves this, the low-speed limit and the step budget
        deadline.begin()
        file_bounds = replace(file_bounds, transfer=deadline)
    problem, slow, last_slow, tries, refused = "", 0, False, max(1, attempts), False
    bodies = sent = 0  # bodies: attempts that got a body (truncated or too slow); sent: every fetch
    while bodies < tries:
        if sent:
            pause_before_fetch(session.retry, item_url, deadline, min(sent, tries) - 1)
        sent += 1
        try:
            got = _fetch(session, item_url, dest, requires_token, url_guard, max_bytes, min_free_bytes, file_bounds)
        except (FhirForbiddenError, FhirWithoutTokenRefusedError) as exc:
            if refused:
                raise _refusal(redact_url(item_url), exc) from exc
            refused = True
            logger.warning("bulk file refused, asking once more", extra={"url": redact_url(item_url)})
            continue
        except TransferTooSlowError as exc:
            problem, slow, last_slow, refused, bodies = str(exc), slow + 1, True, False, bodies + 1
            logger.warning("bulk file arrived too slowly, fetching it again", extra={"url": redact_url(item_url)})
            continue
        except TransferDeadlineError as exc:  # no attempt is left: the deadline is every attempt's together
            if deadline is None:
                raise
            raise _overdue(redact_url(item_url), deadline, exc) from exc
        refused, bodies = False, bodies + 1
        cut = _cut_short(got, item_url, max_bytes)
        if cut is None:
            return got.path
        problem, last_slow = cut, False
        got.path.unlink(missing_ok=True)
        logger.warning("bulk file arrived truncated, fetching it again", extra={"url": redact_url(item_url)})
    raise _failed(redact_url(item_url), tries, slow, problem, last_slow)


def _cut_short(got: Downloaded, url: str, max_bytes: int | None) -> str | None:
    """:func:`truncation_of` the download; a gzip file stored as is whose content inflates past ``max_bytes``, or
    whose compressed bytes run far past what they inflate to, is removed and fails as too large, as a
    ``Content-Encoding: gzip`` body doing so does while it arrives."""
    try:
        return truncation_of(got.path, got.wire_bytes, got.declared_bytes, max_bytes)
    except GzipPastContentError as exc:  # empty gzip members, padding: fetched again, the same bytes come
        got.path.unlink(missing_ok=True)
        raise BulkFileTooLargeError(
            f"bulk file {redact_url(url)}, stored gzipped (no Content-Encoding), holds compressed bytes that inflate "
            f"to almost nothing (empty gzip members or padding): {exc}; the next run fetches it again"
        ) from exc
    except ContentTooLargeError as exc:
        got.path.unlink(missing_ok=True)
        raise file_too_large(
            url, max_bytes, " once its gzip content (stored as is, no Content-Encoding) is inflated"
        ) from exc


def file_too_large(url: str, max_bytes: int | None, how: str = "") -> BulkFileTooLargeError:
    """The error of a file over the per-file limit (``how``: at what point it was found); the run fails, resumable."""
    return BulkFileTooLargeError(
        f"bulk file {redact_url(url)} is larger than the {max_bytes}-byte limit per file{how} "
        "(EHRSYNC_BULK_MAX_FILE_BYTES); raise the limit and run again, the file is fetched then"
    )


def _overdue(url: str, deadline: TransferDeadline, exc: TransferDeadlineError) -> BulkFileDeadlineError:
    """A file not downloaded by its deadline (every attempt and wait together): a server keeping the body just above
    the low-speed limit or asking to wait longer than is left, or a link too slow for the file. Says how many
    attempts were sent (0 when none was) and how long the file took."""
    made = deadline.attempts
    return BulkFileDeadlineError(
        f"bulk file {url} was not downloaded within its {deadline.limit_s:g} s deadline ({FILE_DEADLINE_ENV}): "
        f"{made} attempt{'' if made == 1 else 's'} made in {deadline.spent_s():.1f} s ({exc}); the next run fetches "
        f"it again (raise {FILE_DEADLINE_ENV} if the link is healthy but this slow)",
        url=url,
    )


def _refusal(url: str, exc: FhirError) -> BulkFileExpiredError:
    """A file refused twice in a row (403, or 401 to a request sent without the token) is what a signed file URL
    past its expiry answers for good, so the export is re-run from the same ``_since`` (BDX-19)."""
    return BulkFileExpiredError(
        f"bulk file {url} refused twice (HTTP {exc.status}), as a signed file URL past its expiry is; "
        "re-run the export from the same _since",
        status=exc.status,
        operation_outcome=exc.operation_outcome,
        url=exc.url,
    )


def _failed(
    url: str, tries: int, slow: int, last: str, last_slow: bool
) -> BulkFileTooSlowError | BulkFileTruncatedError:
    """The error for a file that failed every attempt: too slow or truncated as each was, the last one naming it."""
    if slow == tries:
        what = f"arrived too slowly on each of {tries} attempts"
    elif slow == 0:
        what = f"arrived truncated on each of {tries} attempts"
    else:
        what = f"failed on each of {tries} attempts ({tries - slow} truncated, {slow} too slow; the last shown)"
    if last_slow:
        message = f"bulk file {url} {what} ({last}; {_SLOW_VARIABLES}); the next run fetches it again"
        return BulkFileTooSlowError(message, url=url)
    return BulkFileTruncatedError(f"bulk file {url} {what} ({last}); the next run fetches it again", url=url)


def _fetch(
    session: FhirSession,
    item_url: str,
    dest: Path,
    requires_token: bool,
    url_guard: Callable[[str], None],
    max_bytes: int | None,
    min_free_bytes: int,
    bounds: BodyBounds,
) -> Downloaded:
    rule = TokenRule.REQUIRE_ORIGIN if requires_token else TokenRule.NEVER

    def write(response: httpx.Response) -> Downloaded:
        """Only the file's own body is held to the per-file limit: a token refresh made on the way (its
        discovery document over EHRSYNC_MAX_RESPONSE_BYTES) fails as itself, not as an oversized file."""
        try:
            return stream_to_file(response, dest, max_bytes, min_free_bytes=min_free_bytes, scratch=True)
        except ContentTooLargeError as exc:
            wire = wire_allowance(max_bytes)
            if wire is not None and response.num_bytes_downloaded > wire:  # the body decoded to far less than that
                raise BulkFileTooLargeError(
                    f"bulk file {redact_url(item_url)} sent more than {wire} bytes on the wire, the most a file "
                    f"within the {max_bytes}-byte limit per file (EHRSYNC_BULK_MAX_FILE_BYTES) takes: a compressed "
                    "body that decodes to almost nothing (empty gzip members); the next run fetches it again"
                ) from exc
            raise file_too_large(item_url, max_bytes) from exc

    try:
        return session.request(
            "GET",
            item_url,
            headers={"Accept": NDJSON, "Accept-Encoding": "gzip"},
            token_rule=rule,
            handler=write,
            max_redirects=5,
            url_guard=url_guard,
            bounds=bounds,
        )
    except FhirError as exc:
        if exc.status in (404, 410):
            raise BulkFileExpiredError(
                f"bulk file gone (HTTP {exc.status}); re-run the export from the same _since",
                status=exc.status,
                operation_outcome=exc.operation_outcome,
                url=exc.url,
            ) from exc
        if isinstance(exc, (FhirUnauthorizedError, FhirForbiddenError, FhirWithoutTokenRefusedError)):
            raise
        raise as_bulk_error("bulk file download failed", exc) from exc
