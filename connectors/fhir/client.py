"""FHIR R4 REST client: capabilities, read, paged search, create (conditional; sent by ``_create.py``), binary
download."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

import httpx

from connectors.errors import EhrSyncError, FhirError, SecurityPolicyError
from connectors.fhir._answers import json_reader
from connectors.fhir._create import send_create
from connectors.fhir._query import DEFAULT_COUNT, check_type, query_pairs
from connectors.fhir._session import FhirSession, QueryParams, SessionOptions, TokenRule
from connectors.fhir.capability import statement_problem
from connectors.fhir.created import (
    FHIR_JSON,
    AsyncStatus,
    CreateResult,
    create_headers,
    parse_location,
    read_async_status,
)
from connectors.fhir.download import Downloaded, stream_to_file
from connectors.fhir.resource_types import ID_RE
from connectors.fhir.search import SearchPage, iter_search_pages
from connectors.http import CallBudget, RetryPolicy, checked_url, normalize_base_url, redact_url, resolve_url
from connectors.tokens import TokenSource
from connectors.transport.bounded_client import bounds_of
from connectors.transport.bounds import BodyBounds

__all__ = ["CreateResult", "FhirClient", "parse_location"]

Guard = Callable[[str], None] | None  # vets a URL before anything is sent there (raises to refuse)


def _check_id(resource_id: str) -> None:
    if not isinstance(resource_id, str) or not ID_RE.match(resource_id):
        raise ValueError("not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)")


class FhirClient:
    """Talks to one FHIR base with tokens from a TokenSource (SAL-40: the token never leaves that base).

    ``http`` may be a shared ``httpx.Client`` (its timeouts apply); otherwise one is created with explicit
    timeouts and closed by :meth:`close`. ``bounds`` caps every JSON body and the time of every request
    (default: those ``http`` carries, else the environment's; :func:`~connectors.transport.bounds_of`).
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
        bounds: BodyBounds | None = None,
        **options: Unpack[SessionOptions],
    ) -> None:
        self.fhir_base = normalize_base_url(fhir_base, allow_http=allow_http)
        #: Byte limit and deadline per response (EHRSYNC_MAX_RESPONSE_BYTES, EHRSYNC_REQUEST_DEADLINE_S).
        self.bounds = bounds or bounds_of(http)
        self._session = FhirSession(self.fhir_base, tokens, http=http, retry=retry, rate_limit=rate_limit, **options)
        self._capabilities: dict[str, Any] | None = None
        self._capabilities_failure: EhrSyncError | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> FhirSession:
        return self._session

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def url_for(self, path: str) -> str:
        """``path`` relative to the base (``Patient/1``), or an absolute URL unchanged."""
        return resolve_url(path, self.fhir_base + "/")

    def capabilities(self, *, refresh: bool = False) -> dict[str, Any]:
        """The CapabilityStatement (``GET [base]/metadata``), cached for the life of the client. Refused here only when
        the body is no CapabilityStatement at all: each reader refuses a slip in the elements it goes through
        (``connectors.fhir.capability.statement_problem`` with its ``Reads``), never for one elsewhere."""
        with self._lock:
            if self._capabilities is not None and not refresh:
                return self._capabilities
        try:
            body = self._session.request(
                "GET",
                self.url_for("metadata"),
                headers={"Accept": FHIR_JSON},
                handler=json_reader(self.bounds.max_bytes),
                bounds=self.bounds,
            )
            problem = statement_problem(body)  # the body only: each reader checks its own elements
            if problem is not None or not isinstance(body, dict):  # a named refusal, never read as declaring nothing
                raise FhirError(
                    f"metadata did not return a CapabilityStatement: {problem}", 200, None, self.url_for("metadata")
                )
        except EhrSyncError as exc:
            with self._lock:
                self._capabilities_failure = exc
            raise
        with self._lock:
            self._capabilities, self._capabilities_failure = body, None
        return body

    @property
    def capabilities_failure(self) -> EhrSyncError | None:
        """Why this client's last read of the CapabilityStatement failed (None: it never failed, or was read since).
        A failed read is not cached (a caller may read again); one that needs the statement only for something
        optional (a Provenance, DWB-82) need not wait out the server's retries a second time."""
        return self._capabilities_failure

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        check_type(resource_type)
        _check_id(resource_id)
        url = self.url_for(f"{resource_type}/{resource_id}")
        body = self._session.request(
            "GET", url, headers={"Accept": FHIR_JSON}, handler=json_reader(self.bounds.max_bytes), bounds=self.bounds
        )
        if not isinstance(body, dict) or body.get("resourceType") != resource_type:
            raise FhirError(f"read {redact_url(url)} did not return a {resource_type}", 200, None, redact_url(url))
        return body

    def search_pages(
        self,
        resource_type: str,
        params: QueryParams | None = None,
        *,
        count: int | None = DEFAULT_COUNT,
        stop_at_repeat: bool = True,
    ) -> Iterator[SearchPage]:
        """Stream search result pages following ``link[next]`` exactly as given (BDX-29).

        ``_count`` (BDX-26, default 200) is added unless ``params`` has one; the server may return fewer.
        ``stop_at_repeat`` False: a lookup (DWB-32/33, no mark to guard) reads past a repeated match to the end.
        """
        check_type(resource_type)
        url, pairs = self.url_for(resource_type), query_pairs(params, count)
        return iter_search_pages(
            self._session, url, pairs, bounds=self.bounds, resource_type=resource_type, stop_at_repeat=stop_at_repeat
        )

    def create(
        self,
        resource: dict[str, Any],
        if_none_exist: str | None = None,
        *,
        prefer_representation: bool = True,
    ) -> CreateResult:
        """POST a resource; with ``if_none_exist`` the server dedups (DWB-31) and retries are safe.

        Without it the request is not retried after a lost response (DWB-32): a TransportError means the
        outcome is unknown and the caller must reconcile. Redirects and 202s: :mod:`connectors.fhir.created`.
        """
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource_type, str):
            raise ValueError("resource has no resourceType")
        check_type(resource_type)
        headers = create_headers(if_none_exist, prefer_representation=prefer_representation)
        return send_create(
            self._session,
            self.url_for(resource_type),
            resource,
            headers,
            base=self.fhir_base,
            bounds=self.bounds,
            resource_type=resource_type,
            idempotent=if_none_exist is not None,
        )

    def check_async_status_url(self, url: str) -> None:
        """``SecurityPolicyError`` now when ``async_status`` would refuse ``url``: off the FHIR base (SAL-40)."""
        self._session.check_token_destination(self.url_for(url), TokenRule.REQUIRE_BASE)

    def async_status(self, url: str, resource_type: str) -> AsyncStatus:
        """One answer of a 202's status endpoint (FHIR async pattern); only under the FHIR base (SAL-40)."""
        return self._session.request(
            "GET",
            self.url_for(url),
            headers={"Accept": FHIR_JSON},
            passthrough=lambda response: response.status_code == 202,
            handler=lambda response: read_async_status(response, resource_type, self.bounds.max_bytes),
            bounds=self.bounds,
        )

    def download(
        self, url: str, dest: Path, max_bytes: int, accept: str, *, url_guard: Guard = None, min_free_bytes: int = 0
    ) -> Downloaded:
        """Stream ``url`` (relative to the base, or absolute) into ``dest``, a token only under the base; ``url_guard``
        vets it and each redirect first; less free disk than ``min_free_bytes`` is InsufficientDiskSpaceError."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        target = self.url_for(url)
        checked_url(target, "refusing to download: the URL", SecurityPolicyError)
        return self._session.request(
            "GET",
            target,
            headers={"Accept": accept, "Accept-Encoding": "gzip"},
            token_rule=TokenRule.IF_WITHIN_BASE,
            handler=lambda response: stream_to_file(response, dest, max_bytes, min_free_bytes=min_free_bytes),
            max_redirects=5,
            url_guard=url_guard,
            bounds=self.bounds.without_byte_limit(),  # stream_to_file applies the caller's cap
        )
