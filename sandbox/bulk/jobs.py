"""Export jobs: each runs in a background thread and writes its files; the manager enforces limits."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from sandbox.bulk.params import ExportRequest
from sandbox.bulk.writer import TypeFiles
from sandbox.config import SandboxConfig
from sandbox.data.ids import SHARED_TYPES
from sandbox.data.store import DataStore
from sandbox.fhir.permission import Permission
from sandbox.fhir.query import matches, subset, without_last_updated

log = logging.getLogger(__name__)
Status = Literal["running", "done", "failed", "cancelled"]


@dataclass
class Job:
    id: str
    client_id: str
    request_url: str
    request: ExportRequest
    types: list[str]
    permissions: dict[str, Permission]
    patients: list[int] | None  # None: every patient
    transaction_time: str
    requires_token: bool
    folder: Path
    failed_types: list[str] = field(default_factory=list)  # fault bulk_error_file: exported as a fatal error
    unreadable_error: bytes | None = None  # fault bulk_error_unreadable: the error line written for failed_types
    files_expired: bool = False  # fault bulk_expired_files: every file answers bulk_expired_status
    status: Status = "running"
    progress: str = "queued"
    files: list[tuple[str, str, int]] = field(default_factory=list)
    error_files: list[tuple[str, str, int]] = field(default_factory=list)
    deleted_files: list[tuple[str, str, int]] = field(default_factory=list)
    finished_at: float | None = None
    last_poll: float = 0.0
    failure: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def _run(job: Job, store: DataStore, cfg: SandboxConfig) -> None:
    req = job.request
    files = TypeFiles(job.folder, cfg.bulk_lines_per_file)
    patient_types = [t for t in job.types if t not in SHARED_TYPES]
    shared_types = [t for t in job.types if t in SHARED_TYPES]
    indexes = job.patients if job.patients is not None else range(store.patients)
    total = len(indexes)
    since, filters, perms, elements = req.since, req.type_filters, job.permissions, req.elements
    omit_last_updated = cfg.omit_last_updated

    def emit(resources: list[dict[str, Any]]) -> None:
        for r in resources:
            rtype = r["resourceType"]
            if since is not None and r["meta"]["lastUpdated"] <= since:
                continue
            if rtype in filters and not any(matches(q, r) for q in filters[rtype]):
                continue
            perm = perms[rtype]
            if perm.filters is not None and not perm.allows(r):
                continue
            if omit_last_updated:
                r = without_last_updated(r)
            files.write(rtype, subset(r, elements) if elements else r)

    try:
        if shared_types:
            emit(store.shared_resources(shared_types))
        for done, index in enumerate(indexes):
            if job.cancel.is_set():
                files.close()
                return
            if patient_types:
                emit(store.patient_resources(index, patient_types))
            if done % 100 == 0:
                job.progress = f"{done}/{total} patients"
            if cfg.bulk_throttle_s:
                time.sleep(cfg.bulk_throttle_s)
        if job.patients is None and patient_types:
            emit(store.orphan_resources(patient_types))
        job.files = files.close()
        _write_extras(job, store)
        job.progress = f"{total}/{total} patients"
        job.status = "done"
    except Exception as exc:  # a failed job must surface as a 500 OperationOutcome, never a hung poll
        log.exception("bulk job %s failed", job.id)
        files.close()
        job.failure = type(exc).__name__
        job.status = "failed"
    finally:
        job.finished_at = time.time()


def _write_extras(job: Job, store: DataStore) -> None:
    """Warning OperationOutcomes for lenient-ignored parameters; ``deleted`` Bundles after ``_since``."""
    req = job.request
    if req.warnings:
        with (job.folder / "errors_1.ndjson").open("wb") as fh:
            for w in req.warnings:
                issue = {"severity": "warning", "code": "not-supported", "diagnostics": w}
                fh.write(orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]}) + b"\n")
        job.error_files = [("OperationOutcome", "errors_1", len(req.warnings))]
    if job.failed_types:
        _fail_types(job)
    if req.since is None:
        return
    scope = None if job.patients is None else set(job.patients)
    gone = store.deleted_since(req.since, job.types, scope)
    if not gone:
        return
    with (job.folder / "deleted_1.ndjson").open("wb") as fh:
        for rtype, rid, when in gone:
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "meta": {"lastUpdated": when},
                "entry": [{"request": {"method": "DELETE", "url": f"{rtype}/{rid}"}}],
            }
            fh.write(orjson.dumps(bundle) + b"\n")
    job.deleted_files = [("Bundle", "deleted_1", len(gone))]


def _fail_types(job: Job) -> None:
    """Fault ``bulk_error_file``: drop the failed types' output and report each in a fatal OperationOutcome, as
    a server does when one type's export breaks (BDX-13: partial success is a 200 with ``error`` files)."""
    failed = set(job.failed_types)
    for _rtype, name, _count in [f for f in job.files if f[0] in failed]:
        (job.folder / f"{name}.ndjson").unlink(missing_ok=True)
    job.files = [f for f in job.files if f[0] not in failed]
    with (job.folder / "errors_fault.ndjson").open("wb") as fh:
        for rtype in job.failed_types:
            unreadable = job.unreadable_error
            fh.write((fatal_outcome_line(rtype) if unreadable is None else unreadable) + b"\n")
    job.error_files.append(("OperationOutcome", "errors_fault", len(job.failed_types)))


def fatal_outcome_line(rtype: str) -> bytes:
    """The error-file line of a type whose export failed (without its newline)."""
    issue = {"severity": "fatal", "code": "exception", "diagnostics": f"failed to export {rtype}: disk error"}
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})


class TooManyJobs(Exception):
    """The client already runs its maximum number of concurrent exports (BDX-07)."""


class JobManager:
    def __init__(self, store: DataStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}

    def start(self, cfg: SandboxConfig, **kwargs: Any) -> Job:
        job_id = uuid.uuid4().hex
        folder = self.data_dir / "bulk" / job_id
        folder.mkdir(parents=True)
        job = Job(id=job_id, folder=folder, **kwargs)
        with self._lock:
            running = sum(1 for j in self.jobs.values() if j.client_id == job.client_id and j.status == "running")
            if running >= cfg.bulk_max_jobs_per_client:
                shutil.rmtree(folder, ignore_errors=True)
                raise TooManyJobs(job.client_id)
            self.jobs[job_id] = job
        job.thread = threading.Thread(target=_run, args=(job, self.store, cfg), daemon=True, name=f"bulk-{job_id[:8]}")
        job.thread.start()
        log.info("bulk job %s started (%s level, %d types)", job_id, job.request.level, len(job.types))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Stop and forget a job; its files go too (open downloads keep their file handle on POSIX)."""
        with self._lock:
            job = self.jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()
        if job.thread is not None:
            job.thread.join(timeout=10)
        job.status = "cancelled"
        shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def shutdown(self) -> None:
        for job_id in list(self.jobs):
            self.cancel(job_id)
