"""A downloaded NDJSON file opened for reading, plain or gzip, with the bytes it may make ehrsync read bounded.

A server may store a Bulk file gzipped and serve it as is (``.ndjson.gz``, no ``Content-Encoding``): it stays
compressed on disk, so the download's byte limit (EHRSYNC_BULK_MAX_FILE_BYTES) counted its compressed bytes only,
and deflate inflates up to ~1000:1 (1 MB of gzipped zeros is 1 GiB, ~3 s of CPU). Every reader that inflates it
again (the truncation check, landing) holds the inflated bytes to the limit a ``Content-Encoding: gzip`` body is
held to while downloading, and stops there: nothing past the limit is inflated. A leaf module (standard library
and ``connectors.errors`` only), so the warehouse opens files with it too.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from connectors.errors import ContentTooLargeError

__all__ = ["GZIP_MAGIC", "UTF8_BOM", "is_gzip", "open_ndjson"]

GZIP_MAGIC = b"\x1f\x8b"
#: A UTF-8 byte order mark: RFC 8259 lets a parser ignore one, and .NET writers put one first by default.
UTF8_BOM = b"\xef\xbb\xbf"


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic number (a file stored gzipped, served without decoding)."""
    with path.open("rb") as probe:
        return probe.read(2) == GZIP_MAGIC


def open_ndjson(
    path: Path, max_bytes: int | None = None, too_large: Callable[[str], Exception] = ContentTooLargeError
) -> BinaryIO:
    """``path``, plain or gzip, past a leading UTF-8 BOM (else its first line is no JSON). With ``max_bytes``, a
    file holding more than that many bytes raises ``too_large(message)``: a plain one at once (its size on disk),
    a gzip one once reading passes the limit, having inflated at most one byte past it."""
    gzipped = is_gzip(path)
    if max_bytes is not None and not gzipped and path.stat().st_size > max_bytes:
        raise too_large(f"{path.name} holds {path.stat().st_size} bytes, more than the {max_bytes}-byte limit")
    handle = cast(BinaryIO, gzip.GzipFile(path, "rb")) if gzipped else path.open("rb")
    skipped = len(UTF8_BOM)
    if handle.read(skipped) != UTF8_BOM:
        handle.seek(0)
        skipped = 0
    if max_bytes is None or not gzipped:
        return handle
    if skipped > max_bytes:  # the mark counts, as a plain file's size and a Content-Encoding body's bytes hold it
        handle.close()
        raise too_large(_over(path, max_bytes))
    return cast(BinaryIO, _Inflated(handle, max_bytes - skipped, lambda: too_large(_over(path, max_bytes))))


def _over(path: Path, max_bytes: int) -> str:
    return f"{path.name} is gzip whose content inflates past the {max_bytes}-byte limit; stopped reading there"


class _Inflated(io.BufferedIOBase):
    """A gzip file's content, each read asking for no more than one byte past what is left of the limit, and
    raising once past it. ``read``/``readline`` go straight to ``gzip``'s C-buffered reader: no copy is added."""

    def __init__(self, inner: BinaryIO, max_bytes: int, fail: Callable[[], Exception]) -> None:
        super().__init__()
        self._inner = inner
        self._left = max_bytes
        self._fail = fail

    def readable(self) -> bool:
        return True

    def _want(self, size: int | None) -> int:
        return self._left + 1 if size is None or size < 0 else min(size, self._left + 1)

    def _count(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise self._fail()
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        return self._count(self._inner.read(self._want(size)))

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        return self._count(self._inner.readline(self._want(size)))

    def close(self) -> None:
        self._inner.close()
        super().close()
