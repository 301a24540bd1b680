"""Bounds on one response: a byte limit on JSON bodies and an overall deadline per request.

httpx's read timeout is per chunk, so a server sending one byte a second never trips it; the deadline here
is checked between chunks against the whole request (and the active step budget, whichever ends first), and every
socket read of the body is cut to what is left of it (``network.pieces_within``: a byte sent just inside each read
timeout no longer keeps the request a read timeout past its deadline). A body
that may rightly stream for hours (a Bulk file) is bounded otherwise: the deadline covers the attempt up to the
answer's headers only, a low-speed limit makes the body keep up an average rate over each window, and a transfer
deadline (``transfer``, :mod:`.transfer`: every attempt together) ends a body kept just above that rate, and
cuts every socket wait of the body to what is left of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from connectors.budgets import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_DEADLINE_S,
    RESPONSE_BYTES_ENV,
    RESPONSE_BYTES_WHAT,
    check_step_budget,
    env_number,
    env_whole_number,
    step_deadline,
)
from connectors.errors import (
    ConfigurationError,
    RequestDeadlineError,
    ResponseTooLargeError,
    TransferTooSlowError,
)
from connectors.http.urls import redact_url
from connectors.transport.decoding import iter_decoded
from connectors.transport.low_speed import LowSpeedLimit
from connectors.transport.network import pieces_within
from connectors.transport.transfer import TransferDeadline

__all__ = [
    "BOUNDS_EXTENSION",
    "BodyBounds",
    "read_capped",
    "request_bounds",
]

BOUNDS_EXTENSION = "ehrsync.bounds"
_BUILT_TIMEOUT = "ehrsync.built_timeout"
_BODY_TIMEOUT = "ehrsync.body_timeout"
_STARTED = "ehrsync.attempt_started"


@dataclass(frozen=True)
class BodyBounds:
    """``max_bytes`` caps a body (None: the caller caps it, e.g. a download); ``deadline_s`` caps a request (with
    ``body_deadline`` False, only up to its answer's headers); ``low_speed`` holds the body to a rate."""

    max_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES
    deadline_s: float | None = DEFAULT_REQUEST_DEADLINE_S
    clock: Callable[[], float] = time.monotonic
    #: False: the active step budget does not cut the body off (token answers: once sent, a grant may have rotated
    #: the refresh token, so an answer that arrives is used; the step budget is checked before sending instead)
    within_step: bool = True
    #: False: the deadline ends with the answer's headers (a download that may rightly stream for hours)
    body_deadline: bool = True
    low_speed: LowSpeedLimit | None = None
    #: The whole transfer's deadline (every attempt of a Bulk file), on ``clock``; None: no such deadline
    transfer: TransferDeadline | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ConfigurationError("the response byte limit must be at least 1")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ConfigurationError("the request deadline must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BodyBounds:
        """``EHRSYNC_MAX_RESPONSE_BYTES`` and ``EHRSYNC_REQUEST_DEADLINE_S`` of ``env`` (else ``os.environ``), else
        the generous defaults."""
        max_bytes = env_whole_number(
            RESPONSE_BYTES_ENV, DEFAULT_MAX_RESPONSE_BYTES, minimum=1, what=RESPONSE_BYTES_WHAT, env=env
        )
        deadline = env_number("EHRSYNC_REQUEST_DEADLINE_S", DEFAULT_REQUEST_DEADLINE_S, env=env)
        return cls(max_bytes, deadline)

    def without_byte_limit(self) -> BodyBounds:
        """The same deadline for a body the caller caps itself (a download streamed to disk)."""
        return replace(self, max_bytes=None)

    def ends_at(self, started: float) -> float | None:
        """When a request started at ``started`` must be done: its deadline, the step's or the transfer's, if sooner."""
        return _first(None if self.deadline_s is None else started + self.deadline_s, self._step_or_transfer())

    def start_attempt(self, request: httpx.Request, timeout: httpx.Timeout | None = None) -> float:
        """Cut ``request``'s timeouts (``timeout``, else its own) to what is left of its deadline (or step budget):
        no single wait may outlive it. Returns the attempt's start time."""
        started = self.clock()
        request.extensions[_STARTED] = started
        ends_at = self.ends_at(started)
        if ends_at is not None:
            # the timeout the request was built with, kept aside: a request sent again starts from it, not the cut
            built = request.extensions.setdefault(_BUILT_TIMEOUT, request.extensions["timeout"])
            base = timeout or httpx.Timeout(**built)
            request.extensions["timeout"] = self._cut(base, ends_at)
            if not self.body_deadline:  # the body's waits: cut only to the step's or the transfer's end
                request.extensions[_BODY_TIMEOUT] = self._cut(base, self._step_or_transfer())
        return started

    def _cut(self, timeout: httpx.Timeout, ends_at: float | None) -> dict[str, float | None]:
        """``timeout`` with each wait cut to what is left until ``ends_at`` (None: as it is)."""
        if ends_at is None:
            return timeout.as_dict()
        left = max(ends_at - self.clock(), 0.01)
        parts = {name: getattr(timeout, name) for name in ("connect", "read", "write", "pool")}
        return httpx.Timeout(**{name: left if v is None else min(v, left) for name, v in parts.items()}).as_dict()

    def headers_in(self, request: httpx.Request) -> None:
        """The answer's headers arrived: without ``body_deadline``, its body's reads wait as long as the request's
        own timeouts allow again, not what was left of the request deadline (httpcore reads them from the request),
        cut only to what was left of the step budget or the transfer's deadline when the attempt began."""
        body_timeout = request.extensions.get(_BODY_TIMEOUT)
        if not self.body_deadline and body_timeout is not None:
            request.extensions["timeout"] = body_timeout

    def body_ends_at(self, started: float) -> float | None:
        """When the body of a request started at ``started`` must be done: as :meth:`ends_at`, or without
        ``body_deadline`` only by the step budget's end or the transfer's deadline."""
        if self.body_deadline:
            return self.ends_at(started)
        return self._step_or_transfer()

    def _step_or_transfer(self) -> float | None:
        step = step_deadline() if self.within_step else None
        return _first(None if step is None else step[0], None if self.transfer is None else self.transfer.ends_at)

    def check_transfer(self, method: str, url: str, received: int | None = None) -> None:
        """Raise TransferDeadlineError once the transfer's deadline (``transfer``) has passed."""
        if self.transfer is not None:
            self.transfer.check(method, url, received)

    def check_wait(self, method: str, url: str, wait_s: float, *, asked: bool = False) -> None:
        """Raise TransferDeadlineError now when waiting ``wait_s`` for the next attempt would end past the transfer's
        deadline (:meth:`TransferDeadline.check_wait`)."""
        if self.transfer is not None:
            self.transfer.check_wait(method, url, wait_s, asked=asked)

    def overran(self, started: float) -> bool:
        """Whether an attempt started at ``started`` is past its deadline (or step budget) now."""
        ends_at = self.ends_at(started)
        return ends_at is not None and self.clock() >= ends_at

    def attempt_overran(self, request: httpx.Request) -> bool:
        """Whether the last attempt of ``request`` (started by :meth:`start_attempt`) is past its deadline now: a
        timeout then means the deadline, not a slow network."""
        started = request.extensions.get(_STARTED)
        return isinstance(started, (int, float)) and self.overran(started)

    def extensions(self) -> dict[str, Any]:
        """Request extensions asking the attempt layer for these bounds on a request without a ``RequestPlan``
        (SMART calls: sent once, never through the retry rules of FHIR calls)."""
        return {BOUNDS_EXTENSION: self}

    def wrap(self, response: httpx.Response, method: str, started: float) -> None:
        """Make every read of ``response`` (handler or error path) respect the byte limit and the deadline."""
        url = redact_url(str(response.request.url))
        declared = response.headers.get("Content-Length", "")
        plain = "Content-Encoding" not in response.headers
        if self.max_bytes is not None and plain and declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise ResponseTooLargeError(_too_large(method, url, self.max_bytes, f"Content-Length {declared}"))
        if isinstance(response.stream, httpx.SyncByteStream):  # always, for the sync client's responses
            response.stream = _BoundedStream(response.stream, self, method, url, started)


def request_bounds(request: httpx.Request) -> BodyBounds | None:
    """The bounds a plan-less request asked for (:meth:`BodyBounds.extensions`), if any."""
    bounds = request.extensions.get(BOUNDS_EXTENSION)
    return bounds if isinstance(bounds, BodyBounds) else None


def _first(a: float | None, b: float | None) -> float | None:
    return a if b is None else b if a is None else min(a, b)  # the earlier of two optional times


def _too_large(method: str, url: str, limit: int, what: str) -> str:
    return f"{method} {url}: {what} exceeds the {limit}-byte response limit (EHRSYNC_MAX_RESPONSE_BYTES)"


class _BoundedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, bounds: BodyBounds, method: str, url: str, started: float) -> None:
        self._inner = inner
        self._bounds = bounds
        self._method = method
        self._url = url
        self._started = started

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        bounds = self._bounds
        limit, slow, clock = bounds.max_bytes, bounds.low_speed, bounds.clock
        ends_at = bounds.body_ends_at(self._started)
        window_at, window_size = clock(), 0  # the low-speed window: when it began, the bytes received by then
        pieces = self._inner if ends_at is None else pieces_within(self._inner, ends_at, clock)  # each read cut to it
        try:
            for chunk in pieces:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ResponseTooLargeError(_too_large(self._method, self._url, limit, "the body"))
                if ends_at is None and slow is None:
                    yield chunk
                    continue
                now = clock()
                if ends_at is not None and now > ends_at:  # the request's deadline, the step's or the transfer's
                    raise self._overdue(size)
                if slow is not None and now - window_at >= slow.window_s:
                    if size - window_size < slow.bytes_per_s * (now - window_at):
                        raise TransferTooSlowError(
                            f"{self._method} {self._url} sent {size - window_size} bytes in {now - window_at:.1f} s, "
                            f"below the low-speed limit of {slow.bytes_per_s:g} bytes/s ({size} bytes received)"
                        )
                    window_at, window_size = now, size
                yield chunk
        except httpx.TimeoutException as exc:  # a read cut to the deadline (``pieces_within``): named as a late piece
            if ends_at is not None and clock() >= ends_at:
                overdue = self._overdue(size)  # the step budget's or the transfer's end raises its own error here
                if bounds.body_deadline:
                    raise overdue from exc
            raise

    def _overdue(self, size: int) -> RequestDeadlineError:
        """The error of a body not done by its end: the step budget's or the transfer's (raised) when that ended
        it, else the request deadline's."""
        check_step_budget()
        self._bounds.check_transfer(self._method, self._url, size)
        return RequestDeadlineError(
            f"{self._method} {self._url} was still sending after {self._bounds.deadline_s:g} s "
            f"({size} bytes received; EHRSYNC_REQUEST_DEADLINE_S)"
        )

    def close(self) -> None:
        self._inner.close()


def read_capped(response: httpx.Response, max_bytes: int | None) -> bytes:
    """The decoded body (``iter_decoded``, capped or not), refusing more than ``max_bytes`` decoded bytes (a small
    gzip body may expand)."""
    parts: list[bytes] = []
    size = 0
    for chunk in iter_decoded(response):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            response.close()
            url = redact_url(str(response.request.url))
            raise ResponseTooLargeError(_too_large(response.request.method, url, max_bytes, "the decoded body"))
        parts.append(chunk)
    return b"".join(parts)
