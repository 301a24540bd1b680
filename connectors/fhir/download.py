"""Stream an HTTP body to disk: temp file beside the destination, sha256 while streaming, size cap, rename.

A reader never sees a half-written file: the destination appears only once the body is complete (BDX-17).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from connectors.errors import ContentTooLargeError
from connectors.http import redact_url

__all__ = ["CHUNK_SIZE", "Downloaded", "stream_to_file"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Downloaded:
    """A completed download: final path, decoded size in bytes, the server's Content-Type, hex sha256."""

    path: Path
    size: int
    content_type: str | None
    sha256: str


def stream_to_file(response: httpx.Response, dest: Path, max_bytes: int | None) -> Downloaded:
    """Write the (decoded, e.g. gunzipped) body to ``dest``; raise ContentTooLargeError past ``max_bytes``.

    The cap applies to decoded bytes, so a small gzip body cannot expand without bound on disk.
    """
    url = redact_url(str(response.url))
    declared = response.headers.get("Content-Length")
    plain = "Content-Encoding" not in response.headers
    if max_bytes is not None and plain and declared and declared.isdigit() and int(declared) > max_bytes:
        raise ContentTooLargeError(f"{url}: Content-Length {declared} exceeds the {max_bytes}-byte cap")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ContentTooLargeError(f"{url}: body exceeds the {max_bytes}-byte cap")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    logger.debug("downloaded", extra={"url": url, "bytes": size})
    return Downloaded(dest, size, response.headers.get("Content-Type"), digest.hexdigest())
