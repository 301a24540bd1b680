"""The request deadline down to every socket read and write, headers included.

httpx's timeouts apply to each read: a server sending its status line and headers a byte at a time, each byte
within the read timeout, kept a request open for as long as it liked (a 100-byte header at 0.3 s a byte took 30 s
against a 2 s deadline). The body is checked between chunks (``bounds._BoundedStream``), but headers are read
inside httpcore. So the attempt layer publishes the attempt's deadline for its thread (:func:`attempt_deadline`)
and the network streams of the transports ehrsync builds (:func:`deadline_transport`) cut every connect, read and
write to what is left of it; past it they raise httpcore's own timeout, which httpx maps as usual. The body is
read after that block, so every body with a deadline (a JSON answer's request deadline, a Bulk file's deadline for
every attempt together, the step budget) is read through :func:`pieces_within`: otherwise each of its reads waited
the whole read timeout cut only when the attempt began, and a byte sent just inside it kept the request open up to
one such wait past its deadline.

A caller's own ``httpx.Client`` (a library user's) keeps its transport: its headers are bounded by its read
timeout per byte only.
"""

from __future__ import annotations

import contextlib
import ssl
import typing
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar

import httpcore
import httpx

__all__ = ["attempt_deadline", "deadline_transport", "keeps_deadline", "pieces_within"]

_Deadline = tuple[float, Callable[[], float]]
_DEADLINE: ContextVar[_Deadline | None] = ContextVar("ehrsync_attempt_deadline", default=None)
_SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


@contextlib.contextmanager
def attempt_deadline(ends_at: float | None, clock: Callable[[], float]) -> Iterator[None]:
    """Within the block, this thread's socket operations end by ``ends_at`` (on ``clock``); None: no deadline."""
    token = _DEADLINE.set(None if ends_at is None else (ends_at, clock))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def pieces_within(pieces: Iterable[bytes], ends_at: float, clock: Callable[[], float]) -> Iterator[bytes]:
    """``pieces`` (a body), each read for the next within :func:`attempt_deadline` ``ends_at``: a body's reads, outside
    the attempt's block, would otherwise each wait the whole read timeout however little is left (of the request
    deadline, a Bulk file's deadline or the step budget). Per piece: one context variable set and reset, no clock
    reading unless the socket is read."""
    source, deadline = iter(pieces), (ends_at, clock)
    while True:
        token = _DEADLINE.set(deadline)
        try:
            piece = next(source, None)
        finally:
            _DEADLINE.reset(token)
        if piece is None:
            return
        yield piece


def _cut(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` cut to what is left of the thread's deadline; ``expired`` once nothing is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline[0] - deadline[1]()
    if left <= 0:
        raise expired("the request deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cut(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _cut(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        cut = _cut(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, cut))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        cut = _cut(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, cut, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[_SocketOption] | None = None
    ) -> httpcore.NetworkStream:
        cut = _cut(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, cut, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(**kwargs: typing.Any) -> httpx.HTTPTransport:
    """``httpx.HTTPTransport(**kwargs)`` whose connections keep to :func:`attempt_deadline`. httpx offers no
    argument for httpcore's network backend, so it is put in after construction; a version of either library that
    moves it fails here, at start, not silently unbounded."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        raise RuntimeError("httpx/httpcore no longer keep the pool's network backend where ehrsync expects it")
    pool._network_backend = _DeadlineBackend(backend)
    return transport


def keeps_deadline(transport: httpx.BaseTransport) -> bool:
    """Whether ``transport`` was built by :func:`deadline_transport`."""
    pool = getattr(transport, "_pool", None)
    return isinstance(getattr(pool, "_network_backend", None), _DeadlineBackend)
