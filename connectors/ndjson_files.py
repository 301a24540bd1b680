"""A downloaded NDJSON file opened for reading, plain or gzip, with the bytes it may make ehrsync read bounded.

A server may store a Bulk file gzipped and serve it as is (``.ndjson.gz``, no ``Content-Encoding``): it stays
compressed on disk, so the download's byte limit (EHRSYNC_BULK_MAX_FILE_BYTES) counted its compressed bytes only,
and deflate inflates up to ~1000:1 (1 MB of gzipped zeros is 1 GiB, ~3 s of CPU). Every reader that inflates it
again (the truncation check, landing) holds the inflated bytes to the limit a ``Content-Encoding: gzip`` body is
held to while downloading, and stops there: nothing past the limit is inflated.

The compressed bytes are bounded too: a gzip stream of members that inflate to nothing (20 bytes each) or of zero
padding after its last member costs ~0.1-0.2 s of CPU per MB read (gzip reads them a member, or a padding byte, at a
time), ~30 min for a 10 GiB file, however little it inflates to. Once the compressed bytes read run ``AHEAD_BYTES``
past the bytes inflated, reading stops with a typed error naming the file (``past_content``: GzipPastContentError,
a too-large one). NDJSON is text, which deflate never makes larger (its fallback for bytes it cannot compress adds
5 in 64 KiB), so no file of content gets near that. A reader without a limit reads gzip as is: it opens only files
the truncation check has read through with the limit (error, deleted and member-id files).

A leaf module (standard library and ``connectors.errors`` only), so the warehouse opens files with it too.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from connectors.errors import ContentTooLargeError, GzipPastContentError

__all__ = ["AHEAD_BYTES", "GZIP_MAGIC", "UTF8_BOM", "is_gzip", "open_ndjson"]

GZIP_MAGIC = b"\x1f\x8b"
#: A UTF-8 byte order mark: RFC 8259 lets a parser ignore one, and .NET writers put one first by default.
UTF8_BOM = b"\xef\xbb\xbf"
#: The most inflated bytes one read asks gzip for: within one read gzip inflates no more than that (and its 8 KiB
#: buffer), so the compressed bytes it reads meanwhile stay within ``AHEAD_BYTES`` of those counted before it.
_PIECE = 2 * 1024 * 1024
#: How far the compressed bytes read may run past the bytes they inflated to (room for one ``_PIECE`` and buffers).
AHEAD_BYTES = _PIECE + 1024 * 1024


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic number (a file stored gzipped, served without decoding)."""
    with path.open("rb") as probe:
        return probe.read(2) == GZIP_MAGIC


def open_ndjson(
    path: Path,
    max_bytes: int | None = None,
    too_large: Callable[[str], Exception] = ContentTooLargeError,
    past_content: Callable[[str], Exception] = GzipPastContentError,
) -> BinaryIO:
    """``path``, plain or gzip, past a leading UTF-8 BOM (else its first line is no JSON). With ``max_bytes``, a
    file holding more than that many bytes raises ``too_large(message)``: a plain one at once (its size on disk),
    a gzip one once reading passes the limit, having inflated at most one byte past it; with ``max_bytes``, a gzip
    one whose compressed bytes read run ``AHEAD_BYTES`` past what they inflated to raises ``past_content(message)``
    (module docstring)."""
    if not is_gzip(path):
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise too_large(f"{path.name} holds {path.stat().st_size} bytes, more than the {max_bytes}-byte limit")
        plain = path.open("rb")
        _skip_bom(plain)
        return plain
    if max_bytes is None:  # a file the truncation check has passed (error, deleted and member-id files)
        handle = cast(BinaryIO, gzip.GzipFile(path, "rb"))
        _skip_bom(handle)
        return handle
    compressed = _Compressed(path.open("rb"), lambda read, inflated: past_content(_ahead(path, read, inflated)))
    try:
        handle = cast(BinaryIO, gzip.GzipFile(fileobj=compressed, mode="rb"))  # it reads and seeks, no more
        skipped = _skip_bom(handle)
    except BaseException:
        compressed.close()
        raise
    if skipped > max_bytes:  # the mark counts, as a plain file's size and a Content-Encoding body's bytes hold it
        handle.close()
        raise too_large(_over(path, max_bytes))
    inflated = _Inflated(handle, compressed, max_bytes - skipped, lambda: too_large(_over(path, max_bytes)))
    compressed.inflated = inflated.inflated_bytes
    return cast(BinaryIO, inflated)


def _skip_bom(handle: BinaryIO) -> int:
    """Move ``handle`` past a leading UTF-8 BOM; returns the bytes skipped (0 when it holds none)."""
    if handle.read(len(UTF8_BOM)) == UTF8_BOM:
        return len(UTF8_BOM)
    handle.seek(0)
    return 0


def _ahead(path: Path, read: int, inflated: int) -> str:
    return (
        f"{path.name} is gzip whose compressed bytes run more than {AHEAD_BYTES} past what they inflate to "
        f"({read} read, {inflated} inflated: members that inflate to nothing, or padding); stopped reading there"
    )


def _over(path: Path, max_bytes: int) -> str:
    return f"{path.name} is gzip whose content inflates past the {max_bytes}-byte limit; stopped reading there"


class _Compressed:
    """A gzip file's compressed bytes as gzip reads them, counted: ``fail(read, inflated)`` is raised once they run
    ``AHEAD_BYTES`` past ``inflated()`` (what the reader above has inflated so far; 0 until it is set)."""

    def __init__(self, raw: BinaryIO, fail: Callable[[int, int], Exception]) -> None:
        self._raw = raw
        self._fail = fail
        self._read = 0
        self.inflated: Callable[[], int] = lambda: 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self._read += len(data)
        if self._read - AHEAD_BYTES > self.inflated():
            raise self._fail(self._read, self.inflated())
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        self._read = self._raw.seek(offset, whence)  # a rewind reads those bytes again: counted from there
        return self._read

    def close(self) -> None:
        self._raw.close()


class _Inflated(io.BufferedIOBase):
    """A gzip file's content, each read asking for no more than one byte past what is left of the limit (and at
    most ``_PIECE``), raising once past it. ``read``/``readline`` go straight to ``gzip``'s C-buffered reader: no
    copy is added unless a read asks for more than ``_PIECE``, or a line is longer."""

    def __init__(self, inner: BinaryIO, compressed: _Compressed, max_bytes: int, fail: Callable[[], Exception]) -> None:
        super().__init__()
        self._inner = inner
        self._compressed = compressed
        self._max = max_bytes
        self._left = max_bytes
        self._fail = fail

    def readable(self) -> bool:
        return True

    def inflated_bytes(self) -> int:
        """The bytes handed out so far (all but a leading BOM)."""
        return self._max - self._left

    def _want(self, size: int | None) -> int:
        return self._left + 1 if size is None or size < 0 else min(size, self._left + 1)

    def _count(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise self._fail()
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        want = self._want(size)
        if want <= _PIECE:
            return self._count(self._inner.read(want))
        pieces = []
        while want and (piece := self._count(self._inner.read(min(want, _PIECE)))):
            pieces.append(piece)
            want -= len(piece)
        return b"".join(pieces)

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        ask = self._want(size)
        line = self._count(self._inner.readline(ask if ask < _PIECE else _PIECE))
        if len(line) != _PIECE or line[-1] == 10 or ask == _PIECE:  # 10: b"\n"; no min(): this runs per line
            return line
        return self._rest_of_line(line, ask - _PIECE)

    def _rest_of_line(self, line: bytes, want: int) -> bytes:
        """A line longer than ``_PIECE``: up to ``want`` more bytes of it, a piece at a time."""
        pieces = [line]
        while want:
            piece = self._count(self._inner.readline(min(want, _PIECE)))
            pieces.append(piece)
            want -= len(piece)
            if len(piece) != _PIECE or piece[-1] == 10:
                break
        return b"".join(pieces)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._compressed.close()
        super().close()
