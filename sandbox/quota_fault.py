"""The ``quota`` fault: a server that allows ``quota`` requests per ``window_s`` seconds, says on every answer how
many remain and when the window resets, and answers 429 (with ``Retry-After``) once they are spent.

The window is fixed: it starts with the first request counted and restarts with the first one after it ends.
``quota_headers`` picks how the server says so:

- ``ietf``: ``RateLimit: "sandbox";r=N;t=S`` and ``RateLimit-Policy: "sandbox";q=Q;w=W``
- ``draft``: ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` (delta-seconds)
- ``x``: ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (delta-seconds)
- ``x_epoch``: the same with ``X-RateLimit-Reset`` as a Unix timestamp (the server clock's)
- ``x_no_reset``: ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` only: never when the calls come back
- ``malformed``: headers no client can use (a negative or non-numeric remaining, a reset in words)

Seconds to the reset are rounded up. ``GET /admin/faults`` lists each quota fault with ``requests`` (counted) and
``refused`` (answered 429).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from starlette.types import Message, Send

__all__ = ["QuotaHeaders", "QuotaWindow", "with_headers"]

QuotaHeaders = Literal["ietf", "draft", "x", "x_epoch", "x_no_reset", "malformed"]
Header = tuple[bytes, bytes]


class QuotaWindow:
    """One armed quota fault: its settings and its counts."""

    def __init__(self, path: str | None, method: str | None, quota: int, window_s: float, style: str) -> None:
        self.path = path
        self.method = method
        self.quota = quota
        self.window_s = window_s
        self.style = style
        self.requests = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._started: float | None = None
        self._used = 0

    def matches(self, path: str, method: str | None) -> bool:
        if self.path and not path.startswith(self.path):
            return False
        return not (self.method and method and self.method != method)

    def admit(self, now_epoch: float) -> tuple[bool, list[Header]]:
        """Count one request: whether it is within the quota, and the headers its answer carries."""
        now = time.monotonic()
        with self._lock:
            if self._started is None or now >= self._started + self.window_s:
                self._started, self._used = now, 0
            self.requests += 1
            allowed = self._used < self.quota
            if allowed:
                self._used += 1
            else:
                self.refused += 1
            remaining = self.quota - self._used
            reset = max(math.ceil(self._started + self.window_s - now), 0)
        headers = self._headers(remaining, reset, now_epoch)
        if not allowed:
            headers.append((b"retry-after", str(max(reset, 1)).encode()))
        return allowed, headers

    def _headers(self, remaining: int, reset: int, now_epoch: float) -> list[Header]:
        quota, window = str(self.quota).encode(), str(math.ceil(self.window_s)).encode()
        left, secs = str(remaining).encode(), str(reset).encode()
        if self.style == "ietf":
            return [
                (b"ratelimit", b'"sandbox";r=' + left + b";t=" + secs),
                (b"ratelimit-policy", b'"sandbox";q=' + quota + b";w=" + window),
            ]
        if self.style == "malformed":
            return [
                (b"ratelimit", b'"sandbox";r=none;t=soon'),
                (b"ratelimit-remaining", b"-1"),
                (b"x-ratelimit-remaining", b"0"),
                (b"x-ratelimit-reset", b"at midnight"),
            ]
        prefix = b"ratelimit-" if self.style == "draft" else b"x-ratelimit-"
        if self.style == "x_epoch":
            secs = str(math.ceil(now_epoch) + reset).encode()
        if self.style == "x_no_reset":
            return [(prefix + b"limit", quota), (prefix + b"remaining", left)]
        return [(prefix + b"limit", quota), (prefix + b"remaining", left), (prefix + b"reset", secs)]

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {
                "kind": "quota",
                "path": self.path,
                "method": self.method,
                "quota": self.quota,
                "window_s": self.window_s,
                "quota_headers": self.style,
                "requests": self.requests,
                "refused": self.refused,
            }


def with_headers(send: Send, extra: list[Header]) -> Callable[[Message], Coroutine[Any, Any, None]]:
    """``send`` adding ``extra`` to the answer's headers."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending
