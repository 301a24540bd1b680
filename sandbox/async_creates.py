"""Creates a sandbox accepted for later (202, ``sandbox.fhir.create_answers``): each a job run once its time comes."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any

from sandbox.data.store import DataStore

__all__ = ["AsyncCreates"]


@dataclass
class _Job:
    body: dict[str, Any]
    due: float
    rejects: bool
    done: bool = False
    created: dict[str, Any] | None = None


class AsyncCreates:
    """Creates accepted for later (202), by job id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}

    def submit(self, body: dict[str, Any], due: float, rejects: bool) -> str:
        job_id = secrets.token_hex(8)
        with self._lock:
            self._jobs[job_id] = _Job(body, due, rejects)
        return job_id

    def settle(self, store: DataStore, now: float) -> None:
        """Run every job whose time has come (a rejected one stores nothing)."""
        with self._lock:
            for job in self._jobs.values():
                if not job.done and now >= job.due:
                    job.done = True
                    job.created = None if job.rejects else store.create(job.body)

    def get(self, job_id: str) -> _Job | None:
        with self._lock:
            return self._jobs.get(job_id)
