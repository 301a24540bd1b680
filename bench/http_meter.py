"""Counts the HTTP requests an httpx client sends, and when chosen responses first arrived."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class HttpMeter:
    """Event hooks for ``httpx.Client``: request counts by kind, bytes received, first-seen times by label.

    ``kind`` is the first path segment after ``/fhir/`` (``Observation``), or the operation (``$export``) or ``/bulk/``
    (``status``, ``files``), so a report can say which requests an incremental sync still makes.
    """

    requests: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, timeout_s: float = 120.0) -> httpx.Client:
        return httpx.Client(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.first_seen.clear()

    def _on_request(self, request: httpx.Request) -> None:
        kind = request_kind(request.url.path)
        with self._lock:
            self.requests[kind] += 1
            self.first_seen.setdefault(f"request:{kind}", time.perf_counter())

    def _on_response(self, response: httpx.Response) -> None:
        label = f"response:{request_kind(response.request.url.path)}:{response.status_code}"
        with self._lock:
            self.first_seen.setdefault(label, time.perf_counter())


def request_kind(path: str) -> str:
    """``/fhir/Observation`` → ``Observation``; ``/bulk/status/j1`` → ``bulk/status``; ``/oauth/token`` → ..."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "/"
    if parts[0] == "fhir" and len(parts) > 1:
        operation = next((p for p in parts[1:] if p.startswith("$")), None)
        return operation or parts[1]
    return "/".join(parts[:2])
