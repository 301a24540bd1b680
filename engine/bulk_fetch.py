"""One Bulk manifest file, fetched by a download worker: downloaded (BDX-16..20) and, an ``output`` file, landed to
Parquet at once; a file landing fewer lines than its manifest counted is fetched again. Nothing here touches the
warehouse (``engine.bulk_files`` applies what the workers hand back on its own thread)."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from connectors.bulk import BulkClient, HostConcurrencyLimiter
from connectors.bulk.files import TRUNCATION_ATTEMPTS, file_deadline, file_too_large, pause_before_fetch
from connectors.http import redact_url
from connectors.transport import TransferDeadline
from engine import bulk_state
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from warehouse import LandedFile, LandingFileTooLargeError, land_ndjson_file

__all__ = ["HOSTS", "FetchedFile", "fetch_file"]

_log = logging.getLogger(__name__)
# Shared by every job of this process: the per-server cap on concurrent downloads (BDX-18).
HOSTS = HostConcurrencyLimiter(4)


@dataclass(frozen=True)
class FetchedFile:
    """An output file already landed to Parquet, or an error/deleted file downloaded to ``path``."""

    landed: LandedFile | None = None
    path: Path | None = None


def fetch_file(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    client: BulkClient,
    job: bulk_state.JobView,
    f: bulk_state.FileView,
    run_id: str,
    tmp_dir: Path,
    landing_slots: threading.BoundedSemaphore | None = None,
) -> FetchedFile:
    """Download one file to ``tmp_dir``; land an ``output`` file at once and remove its download.

    ``landing_slots`` bounds how many files are parsed into Parquet at once (downloads stay parallel). An output
    file that lands fewer lines than the manifest's ``count`` is fetched again like a truncation (a body cut right
    after a newline passes every byte check), up to TRUNCATION_ATTEMPTS times; still short after that, it is handed
    on: ``engine.bulk_files`` keeps what arrived and holds the type incomplete. Landing counts the lines (a separate
    counting pass was 0.8 s of CPU per 10,000-patient export, docs/PERFORMANCE.md). The file's deadline
    (EHRSYNC_BULK_FILE_DEADLINE_S) is wall time from its first attempt: the landings and the waits between its
    fetches count, and a wait that would end past it fails the file at once (BulkFileDeadlineError)."""
    dest, deadline = tmp_dir / f"{f.id}.ndjson", file_deadline(client.file_deadline_s)
    if f.kind != "output":
        return FetchedFile(path=_download(env, client, job, f, dest, deadline))
    for attempt in range(TRUNCATION_ATTEMPTS):
        if attempt:
            pause_before_fetch(client.retry, f.url, deadline, attempt - 1)
        landed = _land(env, conn, job, f, run_id, _download(env, client, job, f, dest, deadline), landing_slots)
        got = landed.rows + landed.quarantined  # the file's non-blank lines, as the manifest counts them
        if f.expected_count is None or got >= f.expected_count or attempt == TRUNCATION_ATTEMPTS - 1:
            return FetchedFile(landed=landed)
        for stale in (landed.path, landed.quarantine_path):
            if stale is not None:
                Path(stale).unlink(missing_ok=True)
        _log.warning(
            "bulk file held %d of the %d resources its manifest counted; fetching it again",
            got,
            f.expected_count,
            extra={"url": redact_url(f.url)},
        )
    raise AssertionError("unreachable: the last attempt returns")


def _download(
    env: SyncEnvironment,
    client: BulkClient,
    job: bulk_state.JobView,
    f: bulk_state.FileView,
    dest: Path,
    deadline: TransferDeadline | None,
) -> Path:
    requires_token = job.requires_access_token if job.requires_access_token is not None else True
    with HOSTS.slot(f.url):  # the deadline begins with the first download, its host slot held
        return client.download(
            f.url,
            dest,
            requires_token,
            max_bytes=env.bulk_max_file_bytes,
            min_free_bytes=env.min_free_disk_bytes,
            deadline=deadline,
        )


def _land(
    env: SyncEnvironment,
    conn: ConnectionInfo,
    job: bulk_state.JobView,
    f: bulk_state.FileView,
    run_id: str,
    path: Path,
    landing_slots: threading.BoundedSemaphore | None,
) -> LandedFile:
    """Land the downloaded ``path`` as this file's Parquet (the same name on every attempt), then remove it. A gzip
    file stored as is is held to EHRSYNC_BULK_MAX_FILE_BYTES once inflated, as its download's check held it."""
    try:
        with landing_slots or contextlib.nullcontext():
            return land_ndjson_file(
                env.zone,
                path,
                connection_id=conn.id,
                resource_type=f.resource_type,
                run_id=run_id,
                source=f.stored_source,
                max_bytes=env.bulk_max_file_bytes,
                tenant_id=conn.tenant_id,
                transaction_time=job.transaction_time,
                seq=f"bulk-{f.id}",
            )
    except LandingFileTooLargeError as exc:
        raise file_too_large(f.url, env.bulk_max_file_bytes, " once inflated") from exc
    finally:
        path.unlink(missing_ok=True)
