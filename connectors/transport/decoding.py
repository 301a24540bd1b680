"""A response body decoded a bounded piece at a time, whatever the server compressed into it.

httpx inflates each chunk it receives whole: one 64 KiB read of a gzip body that compresses 1000:1 (a file of
near-identical lines does) becomes ~64 MB at once, per concurrent download, before any byte cap can look at it.
Here gzip and deflate bodies are inflated with zlib's ``max_length``, so no piece is longer than
``piece_bytes`` and the caller's cap and disk checks run between pieces; a plain body's chunks pass through as
they arrive (no re-chunking copies). A gzip or deflate body that ends without its end marker is kept as far as it
decodes, with a warning, as httpx and browsers do: servers that flush their stream but never finish it exist, and
HTTP's own framing (Content-Length, the last chunk) is what tells a cut body; the Bulk line checks and the JSON
parser catch a cut line or document.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator

import httpx

from connectors.errors import ContentTooLargeError, UnsupportedContentEncodingError
from connectors.http.urls import redact_url

__all__ = ["ACCEPT_ENCODING", "DECODED_PIECE_BYTES", "ERROR_BODY_BYTES", "error_answer", "iter_decoded", "with_body"]

logger = logging.getLogger(__name__)

#: What every EHR request accepts: the codings decoded here. httpx's default adds ``br``/``zstd`` whenever some
#: installed package provides them, and a server may then answer with one.
ACCEPT_ENCODING = "gzip, deflate"
DECODED_PIECE_BYTES = 1024 * 1024
#: The most of an error answer's body (an OperationOutcome) kept: the rest is never read.
ERROR_BODY_BYTES = 1024 * 1024
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})  # not true of the copy
_GZIP = frozenset({"gzip", "x-gzip"})
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = zlib.MAX_WBITS | 16
_PLAIN = frozenset({"", "identity"})
# Compressions ehrsync never asks for (``ACCEPT_ENCODING``) and cannot undo: refused by name.
# Any other token is not a compression (servers have been seen sending ``Content-Encoding: utf-8``): read as is,
# as httpx does.
_UNDECODABLE = frozenset({"br", "zstd", "compress", "x-compress", "exi", "pack200-gzip", "aes128gcm", "dcb", "dcz"})


class _Inflater:
    """One gzip (every member, RFC 1952 §2.2) or deflate (zlib-wrapped per RFC 9110, or raw as some servers
    send it) layer, inflated at most ``piece`` bytes per call."""

    def __init__(self, coding: str) -> None:
        self._gzip = coding in _GZIP
        # deflate waits for two bytes to tell a zlib header from raw deflate
        self._inflate: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS) if self._gzip else None
        self._between = b""  # the first bytes of a member or stream, fewer than a header's two
        self._started = False
        self._done = False

    def feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        while not self._done:
            if self._inflate is None:  # deflate's start, or between gzip members
                data, self._between = self._between + data, b""
                if len(data) < 2:
                    self._between = data
                    return
                if not self._gzip:
                    self._inflate = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
                elif data[:2] == _GZIP_MAGIC:
                    self._inflate = zlib.decompressobj(_GZIP_WBITS)
                else:
                    self._done = True  # as gzip(1) does, trailing garbage after the last member is ignored
                    return
            try:
                out = self._inflate.decompress(data, piece)
            except zlib.error as exc:
                raise httpx.DecodingError(f"invalid {'gzip' if self._gzip else 'deflate'} body: {exc}") from exc
            self._started = True
            if out:
                yield out
            if self._inflate.eof:
                data = self._inflate.unused_data
                self._inflate = None
                self._done = not self._gzip
                continue
            data = self._inflate.unconsumed_tail
            if not data and len(out) < piece:  # every input byte used and no output left in zlib
                return

    def unfinished(self) -> bool:
        """Whether the body ended inside a gzip member or deflate stream (no end marker)."""
        return (self._inflate is not None and self._started and not self._done) or bool(
            self._between and not self._gzip
        )


def _zlib_header(head: bytes) -> bool:
    """Whether ``head`` starts a zlib stream (RFC 1950 §2.2: method 8, check bits); else it is raw deflate."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


def iter_decoded(
    response: httpx.Response, piece_bytes: int = DECODED_PIECE_BYTES, *, max_wire_bytes: int | None = None
) -> Iterator[bytes]:
    """The decoded body of a streaming ``response``, no piece longer than ``piece_bytes`` once inflated.

    Raises :class:`UnsupportedContentEncodingError` for a compression ehrsync cannot undo (``br``, ``zstd``,
    ...), ``httpx.DecodingError`` for a corrupt gzip/deflate body, :class:`ContentTooLargeError` once more than
    ``max_wire_bytes`` arrived on the wire: a cap on decoded bytes alone never ends a body that decodes to
    nothing (an endless run of empty gzip members), however much it makes ehrsync read and inflate. A body
    already read (a test's ``httpx.Response(content=...)``) is yielded from memory in pieces.
    """
    try:
        content = response.content
    except httpx.ResponseNotRead:
        pass
    else:
        for start in range(0, len(content), piece_bytes):
            yield content[start : start + piece_bytes]
        return
    codings = [c.strip().lower() for c in response.headers.get("Content-Encoding", "").split(",")]
    url = redact_url(str(response.request.url))
    refused = [c for c in codings if c in _UNDECODABLE]
    if refused:
        raise UnsupportedContentEncodingError(
            f"{response.request.method} {url} answered with Content-Encoding {', '.join(refused)}, which ehrsync "
            "cannot decode (it asks for gzip, deflate or no compression)"
        )
    layers = [_Inflater(c) for c in reversed(codings) if c in _GZIP or c == "deflate"]
    if len(layers) < len([c for c in codings if c not in _PLAIN]):
        logger.debug("unknown Content-Encoding token read as identity", extra={"codings": codings})
    pieces: Iterable[bytes] = _bounded(response.iter_raw(), piece_bytes, max_wire_bytes, url)
    for layer in layers:
        pieces = _through(layer, pieces, piece_bytes, url)
    yield from pieces


def _bounded(chunks: Iterable[bytes], piece_bytes: int, max_wire_bytes: int | None, url: str) -> Iterator[bytes]:
    """Chunks as they arrive (no copy), a rare one longer than ``piece_bytes`` cut into pieces."""
    wire = 0
    for chunk in chunks:
        wire += len(chunk)
        if max_wire_bytes is not None and wire > max_wire_bytes:
            raise ContentTooLargeError(f"{url}: more than {max_wire_bytes} bytes arrived on the wire")
        if len(chunk) <= piece_bytes:
            yield chunk
        else:
            view = memoryview(chunk)
            for start in range(0, len(chunk), piece_bytes):
                yield bytes(view[start : start + piece_bytes])


def _through(layer: _Inflater, pieces: Iterable[bytes], piece_bytes: int, url: str) -> Iterator[bytes]:
    for data in pieces:
        yield from layer.feed(data, piece_bytes)
    if layer.unfinished():
        logger.warning("a compressed body ended without its end marker; kept what it held", extra={"url": url})


def error_answer(response: httpx.Response) -> httpx.Response:
    """An error answer (4xx/5xx) with its body read now, decoded, and cut at ``ERROR_BODY_BYTES``.

    Error bodies are read whole by the retry loop, the token refresh and the error mapping (``response.read()``);
    a Bulk file's answer has no byte limit, so without this a server could answer a download with an endless or
    1000:1 compressed error page and have it all held in memory. The copy is uncompressed and complete as far as
    it goes: ``Content-Encoding`` and ``Content-Length`` are dropped from its headers.
    """
    kept: list[bytes] = []
    size = 0
    try:
        for piece in iter_decoded(response, min(DECODED_PIECE_BYTES, ERROR_BODY_BYTES)):
            kept.append(piece[: ERROR_BODY_BYTES - size])
            size += len(kept[-1])
            if size >= ERROR_BODY_BYTES:
                break
    except (httpx.DecodingError, UnsupportedContentEncodingError):
        pass  # an undecodable error page: the status still says what happened
    finally:
        response.close()
    return with_body(response, b"".join(kept))


def with_body(response: httpx.Response, body: bytes) -> httpx.Response:
    """A copy of ``response`` (a streamed one, its body read elsewhere) holding ``body``, the decoded body: its
    ``Content-Encoding`` and ``Content-Length`` are dropped, they described the bytes on the wire."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=response.extensions,
    )
