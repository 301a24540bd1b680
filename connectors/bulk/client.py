"""FHIR Bulk Data 2.0 client: kick-off, status polling, manifest, file download, cancel (BDX-01..19)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Unpack

import httpx

from connectors.bulk.file_limits import DEFAULT_FILE_DEADLINE_S, DEFAULT_LOW_SPEED, DEFAULT_MAX_FILE_BYTES
from connectors.bulk.files import NDJSON, TRUNCATION_ATTEMPTS, download_file, file_deadline
from connectors.bulk.kickoff import ExportLevel, kickoff_params, kickoff_url
from connectors.bulk.manifest import MAX_MANIFEST_FILES, BulkManifest
from connectors.bulk.manifest_pages import ManifestPageReader, gather_manifest_pages
from connectors.bulk.pacing import PollPacer
from connectors.bulk.wire import (
    BulkStatus,
    as_bulk_error,
    classify_status,
    kickoff_error,
    parameters_body,
    read_bounded,
    status_url_of,
)
from connectors.errors import BulkExportError, EhrSyncError, FhirError, FhirUnauthorizedError, SecurityPolicyError
from connectors.fhir._session import FhirSession, SessionOptions, TokenRule
from connectors.http import CallBudget, RetryPolicy, normalize_base_url, outbound_url_guard, redact_url
from connectors.tokens import TokenSource
from connectors.transport.bounded_client import bounds_of
from connectors.transport.bounds import BodyBounds
from connectors.transport.low_speed import LowSpeedLimit
from connectors.transport.transfer import TransferDeadline

__all__ = ["BulkClient", "BulkStatus", "ExportLevel"]

logger = logging.getLogger(__name__)


class BulkClient:
    """Runs Bulk Data exports against one FHIR base. Status/file URLs must share the base's origin to get the token
    (SAL-40); files with ``requiresAccessToken=false`` are fetched with no token, from the base's origin or any public
    https host (``url_guard``, by default :func:`connectors.http.outbound_url_guard`, vets each file URL and redirect,
    so a manifest cannot point the workers at internal services).

    ``bounds`` (default: those ``http`` carries, :func:`~connectors.transport.bounds_of`) caps the kick-off,
    status (manifest) and cancel bodies and the time of each of those requests, as for FHIR REST. File downloads
    keep their own per-file byte limit, and the deadline covers them only up to the answer's headers: a multi-GB
    file legitimately streams for longer than any per-request deadline, so its body has a low-speed limit instead.
    ``low_speed`` (default :data:`~connectors.bulk.file_limits.DEFAULT_LOW_SPEED`; None: none) is that limit, and
    ``file_deadline_s`` (default :data:`~connectors.bulk.file_limits.DEFAULT_FILE_DEADLINE_S`, 24 h; None: none) bounds
    each file's download, every attempt together. A manifest listing more than ``max_manifest_files`` files (default
    :data:`~connectors.bulk.manifest.MAX_MANIFEST_FILES`; EHRSYNC_BULK_MAX_FILES) is invalid: the job is cancelled.
    ``on_unauthorized`` is called when a request still got 401 after its one token refresh, before the
    FhirUnauthorizedError propagates; it may raise instead (the engine's vault marks a rejected client).
    """

    def __init__(
        self,
        fhir_base: str,
        tokens: TokenSource | None,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: CallBudget | None = None,
        *,
        allow_http: bool = False,
        url_guard: Callable[[str], None] | None = None,
        bounds: BodyBounds | None = None,
        low_speed: LowSpeedLimit | None = DEFAULT_LOW_SPEED,
        file_deadline_s: float | None = DEFAULT_FILE_DEADLINE_S,
        on_unauthorized: Callable[[], None] | None = None,
        max_manifest_files: int = MAX_MANIFEST_FILES,
        **options: Unpack[SessionOptions],
    ) -> None:
        self.bounds, self.max_manifest_files = bounds or bounds_of(http), max_manifest_files
        self.low_speed, self.file_deadline_s = low_speed, file_deadline_s
        self._on_unauthorized = on_unauthorized
        self.fhir_base = normalize_base_url(fhir_base, allow_http=allow_http)
        self._file_guard = url_guard or outbound_url_guard(self.fhir_base)
        self._session = FhirSession(self.fhir_base, tokens, http=http, retry=retry, rate_limit=rate_limit, **options)

    @property
    def retry(self) -> RetryPolicy:
        return self._session.retry

    def close(self) -> None:
        self._session.close()

    def kickoff_url(self, level: ExportLevel, group_id: str | None = None) -> str:
        return kickoff_url(self.fhir_base, level, group_id)

    def kickoff(
        self,
        level: ExportLevel,
        *,
        group_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        type_filters: Sequence[str] | None = None,
        patients: Sequence[str] | None = None,
        output_format: str = NDJSON,
        extra_params: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Start an export and return its absolute status URL (BDX-01..07).

        ``patients`` (``Patient/id`` references) switches to ``POST`` with a ``Parameters`` body (BDX-04).
        A 429 (another export running) is waited out per Retry-After by the retry policy (BDX-07).
        """
        url = self.kickoff_url(level, group_id)
        params = kickoff_params(
            types=types, since=since, type_filters=type_filters, output_format=output_format, extra_params=extra_params
        )
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}

        def handle(answer: httpx.Response) -> str:
            response = read_bounded(answer, self.bounds.max_bytes)
            status_url = status_url_of(response)
            try:  # polled with the token, so only on the FHIR server's origin: refuse now, before a job is saved
                self._session.check_token_destination(status_url, TokenRule.REQUIRE_ORIGIN)
            except SecurityPolicyError as exc:
                raise BulkExportError(
                    f"bulk kick-off answered a status URL on another origin ({redact_url(status_url)}); the access "
                    "token goes only to the FHIR server's origin, so the export cannot be polled",
                    status=response.status_code,
                ) from exc
            return status_url

        try:
            if patients:
                if level == "system":
                    raise ValueError("the patient parameter is only allowed at patient or group level (BDX-04)")
                body = parameters_body(params, patients)
                headers["Content-Type"] = "application/fhir+json"
                status_url = self._session.request(
                    "POST", url, headers=headers, content=body, idempotent=False, handler=handle, bounds=self.bounds
                )
            else:
                status_url = self._session.request(
                    "GET", url, params=params, headers=headers, idempotent=False, handler=handle, bounds=self.bounds
                )
        except FhirUnauthorizedError:
            self._unauthorized()
            raise
        except FhirError as exc:
            raise kickoff_error(exc) from exc
        logger.info("bulk export started", extra={"level": level, "status_url": redact_url(status_url)})
        return status_url

    def poll(self, status_url: str) -> BulkStatus:
        """One status request classified per the BDX-09 table; a failed job raises BulkExportError. The manifest is a
        JSON body like any other: over the byte limit it raises ResponseTooLargeError, past the request deadline
        RequestDeadlineError; neither touches the job, so it stays resumable at this URL."""

        def handle(response: httpx.Response) -> BulkStatus:
            answer = read_bounded(response, self.bounds.max_bytes)
            return classify_status(answer, now=self.retry.wall_clock(), max_files=self.max_manifest_files)

        try:
            return self._session.request(
                "GET",
                status_url,
                headers={"Accept": "application/json"},
                token_rule=TokenRule.REQUIRE_ORIGIN,
                passthrough=lambda _response: True,
                handler=handle,
                bounds=self.bounds,
            )
        except FhirUnauthorizedError:
            self._unauthorized()
            raise

    def check(self, status_url: str, *, cancel_on_abandon: bool = True) -> BulkManifest | BulkStatus:
        """One status request: the whole manifest (every page) once complete, else the status still in progress; a
        failed job raises BulkExportError (an unusable manifest's job is cancelled first, unless told not to)."""
        try:
            status = self.poll(status_url)
            if status.done and status.manifest is not None:
                return gather_manifest_pages(
                    status.manifest, status_url, self._manifest_page_reader(), self.max_manifest_files
                )
        except BulkExportError as exc:
            if exc.status == 200 and cancel_on_abandon:  # unusable manifest: free the server's storage
                self._cancel_quietly(status_url)
            raise
        return status

    def wait(
        self,
        status_url: str,
        deadline_s: float = 86400.0,
        on_progress: Callable[[BulkStatus], None] | None = None,
        *,
        cancel_on_abandon: bool = True,
    ) -> BulkManifest:
        """Poll until complete; past ``deadline_s`` (or on an invalid manifest) cancel the job and raise. A streak of
        transient answers longer than the retry policy raises BulkStatusUnavailableError and never cancels: the job is
        likely alive and the caller resumes it at the same URL later."""
        policy = self.retry
        started = policy.monotonic()
        pacer = PollPacer(policy, status_url)
        while True:
            status = self.check(status_url, cancel_on_abandon=cancel_on_abandon)
            if isinstance(status, BulkManifest):
                return status
            if on_progress is not None:
                on_progress(status)
            delay = pacer.next_delay(status)
            if policy.monotonic() - started + delay > deadline_s:
                if cancel_on_abandon:
                    self._cancel_quietly(status_url)
                raise BulkExportError(f"bulk export not complete within {deadline_s:.0f} s; job cancelled")
            policy.sleep(delay)

    def _manifest_page_reader(self) -> Callable[[str], BulkManifest]:
        reader = ManifestPageReader(self._session, self.bounds, self._file_guard, self.max_manifest_files)

        def read(url: str) -> BulkManifest:
            try:
                return reader(url)
            except FhirUnauthorizedError:
                self._unauthorized()
                raise

        return read

    def cancel(self, status_url: str) -> None:
        """``DELETE`` the job (BDX-11); an already-gone job (404/410) counts as cancelled."""

        def handle(response: httpx.Response) -> None:
            read_bounded(response, self.bounds.max_bytes)  # 2xx, or 404/410: the job is already gone

        try:
            self._session.request(
                "DELETE",
                status_url,
                headers={"Accept": "application/fhir+json"},
                token_rule=TokenRule.REQUIRE_ORIGIN,
                passthrough=lambda r: r.status_code in (404, 410),
                handler=handle,
                bounds=self.bounds,
            )
        except FhirUnauthorizedError:
            self._unauthorized()
            raise
        except FhirError as exc:
            raise as_bulk_error("bulk cancel failed", exc) from exc
        logger.info("bulk export cancelled", extra={"status_url": redact_url(status_url)})

    def _cancel_quietly(self, status_url: str) -> None:
        with contextlib.suppress(EhrSyncError):
            self.cancel(status_url)

    def download(
        self,
        item_url: str,
        dest: Path,
        requires_token: bool,
        *,
        max_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        min_free_bytes: int = 0,
        attempts: int = TRUNCATION_ATTEMPTS,
        deadline: TransferDeadline | None = None,
    ) -> Path:
        """Stream one file to a temp file beside ``dest`` and rename when complete (BDX-16..19).

        Bearer only when ``requires_token`` (and then only on the base's origin); gzip accepted; a retry restarts the
        file; 404/410 raise BulkFileExpiredError (re-run from the same ``_since``). A file that arrives cut short
        (:func:`connectors.bulk.ndjson.truncation_of`) or slower than the client's ``low_speed`` is fetched again, up
        to ``attempts`` times, then BulkFileTruncatedError or BulkFileTooSlowError; one over ``max_bytes`` (default
        10 GiB; None: no limit) raises BulkFileTooLargeError; one not done within the client's ``file_deadline_s``
        BulkFileDeadlineError (``deadline``: the file's own, from :func:`~connectors.bulk.files.file_deadline`, kept
        across fetches of the same file; by default a new one); less free disk than ``min_free_bytes`` raises
        InsufficientDiskSpaceError. All of them leave the file resumable.
        """
        try:
            return download_file(
                self._session,
                item_url,
                dest,
                requires_token=requires_token,
                url_guard=self._file_guard,
                max_bytes=max_bytes,
                min_free_bytes=min_free_bytes,
                attempts=attempts,
                bounds=self.bounds,
                low_speed=self.low_speed,
                deadline=deadline if deadline is not None else file_deadline(self.file_deadline_s),
            )
        except FhirUnauthorizedError:
            self._unauthorized()
            raise

    def _unauthorized(self) -> None:
        if self._on_unauthorized is not None:
            self._on_unauthorized()
