"""Everything a sync needs, built once per run (the connection facts it reads: ``engine.connection_info``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx

from connectors.budgets import DEFAULT_STEP_BUDGET_S, env_number, shared_limiter
from connectors.bulk import BulkClient
from connectors.bulk.file_limits import file_deadline_from_env, low_speed_from_env
from connectors.errors import EhrSyncError, FhirUnauthorizedError
from connectors.fhir import CallBudget, FhirClient, RetryPolicy
from connectors.fhir.capability import Reads, statement_problem
from connectors.http import outbound_url_guard
from connectors.transport import BodyBounds, LowSpeedLimit
from engine.connection_info import ConnectionInfo
from engine.cores import landing_slots, threads_beside
from engine.request_stops import EVERY_REQUEST_WOULD_MEET
from engine.run_capabilities import run_capabilities
from engine.setting_defaults import DEFAULT_BULK_MAX_FILES, DEFAULT_BULK_MERGE_GROUP_BYTES, engine_bytes
from engine.token_throttle import ThrottleAwareTokenSource
from store import AppDatabase, SharedRateBudget, TokenVault
from warehouse import AttachmentStore, LandingZone, Warehouse, open_warehouse

_log = logging.getLogger(__name__)

_BACKEND_KINDS = frozenset({"backend", "group"})  # client_credentials connections: a 401 may mean client_rejected
DEFAULT_ATTACHMENT_TYPES = (
    "text/",
    "image/",
    "application/pdf",
    "application/xml",
    "application/json",
    "application/fhir+json",
    "application/fhir+xml",
    "application/rtf",
)


@dataclass
class SyncEnvironment:
    """Shared handles and knobs of one run; ``warehouse_target`` is opened per step (DuckDB: one writer process)."""

    db: AppDatabase
    vault: TokenVault
    zone: LandingZone
    attachments: AttachmentStore
    warehouse_target: str
    http: httpx.Client | None = None
    overlap: timedelta = timedelta(minutes=5)
    page_size: int = 200
    attachment_max_bytes: int = 20 * 1024 * 1024
    attachment_types: tuple[str, ...] = DEFAULT_ATTACHMENT_TYPES
    bulk_concurrency: int = 4
    # Parsing NDJSON into Parquet is where a file's memory goes; downloads only stream to disk. Files landed at
    # a time: ``engine.cores.landing_slots`` (one on 2 cores, where two contended for the GIL and the merge's core).
    bulk_landing_concurrency: int = field(default_factory=landing_slots)
    # Give the warehouse back to other writers when no landed file has waited for a merge this long (DuckDB
    # admits one writer process; a slow export's downloads must not lock every other sync out).
    bulk_idle_release_s: float = 5.0
    # Landed Bulk files merged per warehouse transaction (engine/bulk_merge_group.py): a DuckDB commit per small
    # file doubled the merge's time and the database file (docs/PERFORMANCE.md).
    bulk_merge_group_bytes: int = DEFAULT_BULK_MERGE_GROUP_BYTES
    bulk_deadline_s: float = 86400.0
    bulk_max_reruns: int = 2
    # A manifest listing more files is invalid and its job cancelled (EHRSYNC_BULK_MAX_FILES, parsed at start).
    bulk_max_files: int = DEFAULT_BULK_MAX_FILES
    # One bulk file larger than this fails (resumable once raised); a download keeps this much disk free.
    # Default, minimum and rule: ``engine.setting_defaults.ENGINE_BYTES``, as the settings check them at start.
    bulk_max_file_bytes: int = field(default_factory=lambda: engine_bytes("EHRSYNC_BULK_MAX_FILE_BYTES"))
    min_free_disk_bytes: int = field(default_factory=lambda: engine_bytes("EHRSYNC_MIN_FREE_DISK_BYTES"))
    # A bulk file's body slower than this is cut off and fetched again (EHRSYNC_BULK_LOW_SPEED_*; None: no limit).
    bulk_low_speed: LowSpeedLimit | None = field(default_factory=low_speed_from_env)
    bulk_file_deadline_s: float | None = field(default_factory=file_deadline_from_env)  # EHRSYNC_BULK_FILE_DEADLINE_S
    # BDX-15: after a group's `_since` export, diff its member ids and export new members' full records.
    bulk_membership_check: bool = True
    rate_limits: bool = True  # the vendor's call budget; False only for a local sandbox
    # Hosts (``host`` or ``host:port``) a bulk manifest or an attachment may name off the FHIR server's origin
    # although they are not public https, e.g. an on-premises file server (EHRSYNC_FETCH_ALLOWED_HOSTS).
    fetch_allowed_hosts: tuple[str, ...] = ()
    retry: RetryPolicy | None = None  # the connectors' defaults (BDX-10) unless given
    # Overall time of one resource type's landing (EHRSYNC_STEP_BUDGET_S); no request outlives it.
    step_budget_s: float = field(default_factory=lambda: env_number("EHRSYNC_STEP_BUDGET_S", DEFAULT_STEP_BUDGET_S))
    # Body and time bounds of every FHIR request, and the wait for a busy connection's lock; None: read from the
    # environment when used. The Dagster resources pass the values the settings parsed at start.
    bounds: BodyBounds | None = None
    lock_wait_s: float | None = None
    # EHRSYNC_LANDING_RETENTION_DAYS: 0 deletes a landed file once its merge committed (engine.landing_retention);
    # any other value (None: not configured) leaves merged files to the daily prune_landing_files job.
    landing_retention_days: int | None = None
    # DuckDB's memory_limit and threads of this run's warehouse connections (EHRSYNC_DUCKDB_MEMORY_LIMIT,
    # EHRSYNC_DUCKDB_THREADS); None: 128MB and ``default_duckdb_threads``. PostgreSQL ignores them.
    duckdb_memory_limit: str | None = None
    duckdb_threads: int | None = None
    _limiters: dict[str, CallBudget] = field(default_factory=dict, repr=False)
    _capabilities: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)
    _refused_reads: set[tuple[str, str, str]] = field(default_factory=set, repr=False)  # (base, reader, slip) warned

    @contextmanager
    def warehouse(self) -> Iterator[Warehouse]:
        """Open the warehouse for one step and always close it, so another process may write next."""
        threads = self.step_duckdb_threads()
        wh = open_warehouse(self.warehouse_target, duckdb_memory_limit=self.duckdb_memory_limit, duckdb_threads=threads)
        try:
            yield wh
        finally:
            wh.close()

    def step_duckdb_threads(self) -> int:
        """DuckDB threads of this run's warehouse connections: EHRSYNC_DUCKDB_THREADS, else the default below."""
        return self.duckdb_threads or self.default_duckdb_threads()

    def default_duckdb_threads(self) -> int:
        """DuckDB threads when EHRSYNC_DUCKDB_THREADS is unset (``engine.cores.threads_beside``)."""
        return threads_beside(self.bulk_landing_concurrency)

    def rate_limiter(self, conn: ConnectionInfo) -> CallBudget | None:
        """One budget per FHIR base for the vendor's limit, shared by every client: in the app database for every
        process where the vendor counts every caller (eCW per practice), else this process's."""
        budget = conn.provider.rate_limit
        if budget is None or not self.rate_limits:
            return None
        if conn.fhir_base not in self._limiters:  # one per process: a Dagster run builds an environment per step
            self._limiters[conn.fhir_base] = (
                SharedRateBudget(self.db, budget.capacity, budget.window_s)
                if budget.across_processes
                else shared_limiter(conn.fhir_base, budget.capacity, budget.window_s)
            )
        return self._limiters[conn.fhir_base]

    def capabilities(
        self, conn: ConnectionInfo, client: FhirClient, run_id: str | None = None, *, reads: Reads
    ) -> dict[str, Any] | None:
        """The server's CapabilityStatement, fetched once per base per run; ``None`` when it has none usable by the
        reader ``reads`` describes (the vendor's defaults decide then; a slip in an element that reader never goes
        through is no reason), but what each later request would meet too raises (a refused grant, an unreachable
        host, a long throttle). With ``run_id`` the run's steps in this process share it."""
        if conn.fhir_base not in self._capabilities:
            fetch = functools.partial(self._fetch_capabilities, conn, client)
            found = fetch() if run_id is None else run_capabilities(conn.fhir_base, run_id, fetch)
            self._capabilities[conn.fhir_base] = found
        statement = self._capabilities[conn.fhir_base]
        problem = statement_problem(statement, reads) if statement is not None else None
        if problem is None:
            return statement
        refused = (conn.fhir_base, reads.what, problem)  # each slip once (a run asks per type), named with the base
        if refused in self._refused_reads:
            return None
        self._refused_reads.add(refused)
        _log.warning(
            "the CapabilityStatement of %s (FHIR base %s) cannot be read for %s (%s); using vendor defaults for every"
            " connection of that base in this step",
            conn.id,
            conn.fhir_base,
            reads.what,
            problem,
        )
        return None

    @staticmethod
    def _fetch_capabilities(conn: ConnectionInfo, client: FhirClient) -> dict[str, Any] | None:
        try:
            return client.capabilities()
        except EVERY_REQUEST_WOULD_MEET:
            raise
        except EhrSyncError as exc:
            _log.warning("no usable CapabilityStatement for %s (%s: %s); using vendor defaults", conn.id, exc.code, exc)
            return None

    def fhir_client(self, conn: ConnectionInfo) -> FhirClient:
        """A REST client; a FhirUnauthorizedError leaving its ``with`` block is confirmed with the vault first."""
        return _EngineFhirClient(
            conn.fhir_base,
            ThrottleAwareTokenSource(self.vault.token_source(conn.id), conn.id),
            http=self.http,
            retry=self.retry,
            rate_limit=self.rate_limiter(conn),
            rate_limit_key=conn.fhir_base,
            client_id=conn.client_id,
            on_unauthorized=lambda: self.confirm_unauthorized(conn),
            bounds=self.bounds,
        )

    def url_guard(self, conn: ConnectionInfo) -> Callable[[str], None]:
        """The SSRF check for URLs the server names (bulk files, attachments), with the operator's exceptions."""
        return outbound_url_guard(conn.fhir_base, allowed_hosts=self.fetch_allowed_hosts)

    def bulk_client(self, conn: ConnectionInfo, *, wait_for_lock: bool = True) -> BulkClient:
        """Bounded like the REST client (EHRSYNC_MAX_RESPONSE_BYTES / EHRSYNC_REQUEST_DEADLINE_S on kick-off,
        status and cancel; files: the deadline up to their headers, then ``bulk_low_speed``, ``bulk_file_deadline_s``;
        a manifest of more than ``bulk_max_files`` files is invalid);
        a request refused with 401 after its token refresh asks the vault to confirm. ``wait_for_lock``: the vault's."""
        return BulkClient(
            conn.fhir_base,
            ThrottleAwareTokenSource(self.vault.token_source(conn.id, wait_for_lock=wait_for_lock), conn.id),
            http=self.http,
            retry=self.retry,
            rate_limit=self.rate_limiter(conn),
            rate_limit_key=conn.fhir_base,
            client_id=conn.client_id,
            url_guard=self.url_guard(conn),
            on_unauthorized=lambda: self.confirm_unauthorized(conn),
            bounds=self.bounds,
            low_speed=self.bulk_low_speed,
            file_deadline_s=self.bulk_file_deadline_s,
            max_manifest_files=self.bulk_max_files,
        )

    def confirm_unauthorized(self, conn: ConnectionInfo) -> None:
        """A request of ``conn`` still got 401 after its one token refresh (FhirUnauthorizedError). For a backend
        or group connection whose token was re-acquired because of that 401, the vault marks it ``client_rejected``
        and raises ClientRejectedError ("check the client registration"); a patient one waits for its next refresh."""
        if conn.kind in _BACKEND_KINDS:
            self.vault.confirm_unauthorized(conn.id)


class _EngineFhirClient(FhirClient):
    """The engine's FhirClient: a request refused with 401 after its token refresh, leaving the ``with`` block,
    first calls ``on_unauthorized`` (which may raise ClientRejectedError in its place)."""

    def __init__(self, *args: Any, on_unauthorized: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_unauthorized = on_unauthorized

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if isinstance(exc, FhirUnauthorizedError):
                self._on_unauthorized()
        finally:
            super().__exit__(exc_type, exc, tb)
