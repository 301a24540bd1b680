"""Bulk manifest files: parallel download and landing, upsert, ``error`` files (BDX-22), ``deleted`` Bundles (BDX-21).

Each file moves ``pending`` → ``landed`` → ``done`` in ``bulk_job_files`` as it goes. Workers only download
and write Parquet (``engine.bulk_fetch``); everything that touches the warehouse happens on the caller's thread,
because a DuckDB connection is one writer and is not shared across threads.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.bulk import BulkClient
from connectors.errors import (
    BulkExportError,
    BulkFileExpiredError,
    EhrSyncError,
    NeedsReauthError,
    RateLimitedError,
)
from engine import bulk_file_counts, bulk_state
from engine.batch_defer import rate_limit_in, throttle_end
from engine.bulk_fetch import FetchedFile, fetch_file
from engine.bulk_merge_group import MergeGroup
from engine.bulk_special import apply_deleted, apply_error_file
from engine.checkpoints import checkpoint
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.handoff import landed_from_json, landed_to_json
from engine.models import utcnow
from engine.reports import BulkReport
from engine.request_stops import LANDING_DISK_FULL
from engine.run_holds import note_source_throttle
from warehouse import LandedFile, Warehouse
from warehouse.errors import WarehouseError

_log = logging.getLogger(__name__)


class ExportExpiredError(Exception):
    """A file of the export is gone: re-run the export from the same ``_since``."""


class _WarehouseTurn:
    """Holds the warehouse's write batch while landed files keep coming, and gives it back when none has for
    ``SyncEnvironment.bulk_idle_release_s``: one DuckDB connection per burst of files (closing one checkpoints
    the file, docs/PERFORMANCE.md) without locking other connections' syncs out for the length of a slow export.
    """

    def __init__(self, wh: Warehouse) -> None:
        self._wh = wh
        self._held = contextlib.ExitStack()
        self._holding = False

    def take(self) -> None:
        if not self._holding:
            self._held.enter_context(self._wh.batch())
            self._holding = True

    def give_back(self) -> None:
        if self._holding:
            self._holding = False
            self._held.close()

    def __enter__(self) -> _WarehouseTurn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.give_back()


@dataclass
class _Failures:
    """Files whose download or landing failed: the next run resumes them; the first one names the error (a full
    landing disk's is the run's own)."""

    messages: list[str] = field(default_factory=list)
    #: The longest throttle a download met (a 429/503 past what ehrsync waits): the run's error is raised from it,
    #: so the run notes the source's hold as a kick-off's or a REST step's throttle does (BDX-10).
    throttle: RateLimitedError | None = None
    #: A landing disk too full (a download's write or free-space check, a Parquet write): every later file would
    #: land on the same disk, so none is fetched after it and the run fails with it (the file's own error; a
    #: ``throttle`` met too is noted on the run's row by ``process_files``, as the run's error no longer carries it).
    disk_full: Exception | None = None

    def add(self, env: SyncEnvironment, f: bulk_state.FileView, exc: Exception) -> None:
        self.messages.append(f"{f.resource_type}: {getattr(exc, 'code', type(exc).__name__)}: {exc}")
        bulk_state.update_file(env.db, f.id, attempts=f.attempts + 1, error=str(exc)[:2000])
        met, at = rate_limit_in(exc), utcnow()
        if isinstance(exc, LANDING_DISK_FULL) and self.disk_full is None:
            self.disk_full = exc
        if met is not None and (
            self.throttle is None or throttle_end(at, met.retry_after) > throttle_end(at, self.throttle.retry_after)
        ):
            self.throttle = met

    def raise_any(self, report: BulkReport) -> None:
        if self.messages:
            report.failed_files = len(self.messages)
            if self.disk_full is not None:
                raise self.disk_full
            raise BulkExportError(
                f"{len(self.messages)} bulk file(s) failed; the next run resumes them: {self.messages[0]}"
            ) from self.throttle


@dataclass(frozen=True)
class _FileRun:
    """One pass over an export's unfinished files, with the warehouse this thread writes through."""

    env: SyncEnvironment
    conn: ConnectionInfo
    job: bulk_state.JobView
    run_id: str
    report: BulkReport
    wh: Warehouse
    turn: _WarehouseTurn
    group: MergeGroup


def process_files(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: BulkClient,
    job: bulk_state.JobView,
    run_id: str,
    report: BulkReport,
    progress: Callable[[str, dict[str, Any]], None] | None,
) -> None:
    """Download (in parallel) and land each unfinished file; upsert in this thread (one warehouse writer)."""
    files = bulk_state.unfinished_files(env.db, job.id)
    report.files = len(bulk_state.all_files(env.db, job.id))
    tmp_dir = env.zone.root / ".bulk-tmp" / job.id
    shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of a killed run are never trusted
    tmp_dir.mkdir(parents=True, exist_ok=True)
    failures = _Failures()
    try:
        with (
            env.warehouse() as wh,
            _WarehouseTurn(wh) as turn,
            MergeGroup(wh, report, _mark_done(env), env.bulk_merge_group_bytes, env.landing_retention_days) as group,
        ):
            run = _FileRun(env, conn, job, run_id, report, wh, turn, group)
            to_fetch = []
            for f in files:
                if f.state == "landed" and f.landed_path:
                    turn.take()
                    group.add(f, landed_from_json(orjson.loads(f.landed_path), f"bulk file {f.id}"))
                else:
                    to_fetch.append(f)
            with ThreadPoolExecutor(max_workers=env.bulk_concurrency, thread_name_prefix="bulk-sync") as pool:
                slots, full = threading.BoundedSemaphore(max(1, env.bulk_landing_concurrency)), threading.Event()
                futures: dict[Future[FetchedFile | None], bulk_state.FileView] = {
                    pool.submit(_fetch_unless_full, full, env, conn, client, job, f, run_id, tmp_dir, slots): f
                    for f in to_fetch
                }
                try:
                    _apply_as_done(run, futures, failures, progress)
                    group.flush()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if failures.disk_full is not None and failures.throttle is not None:  # the disk's error is raised without it
        note_source_throttle(env.db, run_id, conn.id, failures.throttle)  # BDX-10: the source's hold still stands
    failures.raise_any(report)


def _fetch_unless_full(full: threading.Event, *args: Any) -> FetchedFile | None:
    """``fetch_file(*args)``, or None (not fetched: no request, the file stays pending) once a download has met a
    landing disk too full; set by the worker that met it, so no later file is fetched whatever the threads' timing."""
    if full.is_set():
        return None
    try:
        return fetch_file(*args)
    except LANDING_DISK_FULL:
        full.set()
        raise


def _apply_as_done(
    run: _FileRun,
    futures: dict[Future[FetchedFile | None], bulk_state.FileView],
    failures: _Failures,
    progress: Callable[[str, dict[str, Any]], None] | None,
) -> None:
    """Apply each fetched file as soon as it is ready; give the warehouse back while downloads are slow."""
    pending: set[Future[FetchedFile | None]] = set(futures)
    while pending:
        done, pending = wait(pending, timeout=run.env.bulk_idle_release_s, return_when=FIRST_COMPLETED)
        if not done:  # downloads are slow: merge what has landed, then let other writers have the warehouse
            run.group.flush()
            run.turn.give_back()
            continue
        for future in done:
            f = futures[future]
            try:
                fetched = future.result()
            except BulkFileExpiredError as exc:
                raise ExportExpiredError(f"{f.resource_type} file expired: {exc}") from exc
            except NeedsReauthError:
                raise
            except (EhrSyncError, WarehouseError, OSError) as exc:
                failures.add(run.env, f, exc)
                continue
            if fetched is None:  # not fetched after a full landing disk (``_fetch_unless_full``)
                continue
            _apply(run, f, fetched)
            if progress is not None:
                progress("bulk.file", {"job_id": run.job.id, "type": f.resource_type, "kind": f.kind})


def _apply(run: _FileRun, f: bulk_state.FileView, fetched: FetchedFile) -> None:
    env, report = run.env, run.report
    if fetched.landed is not None:
        got = fetched.landed.rows + fetched.landed.quarantined
        # Fewer resources than the manifest counted, on every attempt: data is missing, so the type is held
        # incomplete like an error file's (``_since`` stays). More than counted stays a warning (servers count
        # differently).
        short = f.expected_count is not None and got < f.expected_count
        note = bulk_state.INCOMPLETE_PREFIX + f.resource_type if short else None
        landed_path = orjson.dumps(landed_to_json(fetched.landed)).decode()
        bulk_state.update_file(env.db, f.id, state="landed", landed_path=landed_path, error=note)
        checkpoint("bulk.file_landed")
        run.turn.take()  # after recording the landing: a lock timeout here loses no work, the next run merges it
        if f.expected_count is not None and got != f.expected_count:
            report.note_count_mismatch(bulk_file_counts.count_mismatch(f.url, f.expected_count, got))
        run.group.add(f, fetched.landed)
    elif fetched.path is not None and f.kind == "error":
        run.turn.take()
        run.group.flush()  # special files apply after the outputs that landed before them, as they always did
        apply_error_file(env, run.conn, run.wh, run.job, f, fetched.path, run.run_id, report)
    elif fetched.path is not None and f.kind == "deleted":
        run.turn.take()
        run.group.flush()
        apply_deleted(env, run.conn, run.wh, run.job, f, fetched.path, report)


def _mark_done(env: SyncEnvironment) -> Callable[[bulk_state.FileView, LandedFile], None]:
    def mark(f: bulk_state.FileView, landed: LandedFile) -> None:
        bulk_state.update_file(
            env.db, f.id, state="done", rows=landed.rows, bytes=landed.bytes, quarantined=landed.quarantined
        )

    return mark
