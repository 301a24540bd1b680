"""Stream an HTTP body to disk: temp file beside the destination, sha256 while streaming, size cap, rename.

A reader never sees a half-written file: the destination appears only once the body is complete (BDX-17).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from connectors.errors import ContentTooLargeError, InsufficientDiskSpaceError
from connectors.http import redact_url
from connectors.transport.decoding import iter_decoded

__all__ = ["Downloaded", "check_free_disk", "stream_to_file", "wire_allowance"]

logger = logging.getLogger(__name__)

#: Bytes gathered before each write to disk: the body arrives in reads of at most 64 KiB, and one write call (and
#: one hand-over of the GIL) per read cost the download threads CPU that the landing thread needs.
WRITE_BUFFER_BYTES = 1024 * 1024
#: How often (in written bytes) a download re-checks the free disk space it must leave.
DISK_CHECK_EVERY = 16 * 1024 * 1024
#: A write refused for want of room: no space left on the device, or the user's quota there spent.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def wire_allowance(max_bytes: int | None) -> int | None:
    """The most bytes a body capped at ``max_bytes`` decoded may take on the wire (None: no cap). gzip and deflate
    add a few bytes per block to data they cannot compress (~0.01%); a sixteenth more plus 1 MiB admits any real
    encoding, while a body that decodes to nothing (endless empty gzip members, all CPU and no output) still ends."""
    return None if max_bytes is None else max_bytes + max_bytes // 16 + 1024 * 1024


@dataclass(frozen=True)
class Downloaded:
    """A completed download: final path, decoded size in bytes, the server's Content-Type, hex sha256 (None for a
    scratch download).

    ``wire_bytes`` is what arrived on the wire (before any gzip decoding) and ``declared_bytes`` the
    Content-Length the server announced, so a caller can tell a body that stopped short.
    """

    path: Path
    size: int
    content_type: str | None
    sha256: str | None
    wire_bytes: int = 0
    declared_bytes: int | None = None


def check_free_disk(folder: Path, reserve: int, what: str) -> None:
    """Raise InsufficientDiskSpaceError when less than ``reserve`` bytes are free where ``folder`` lives."""
    if reserve <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < reserve:
        raise InsufficientDiskSpaceError(
            f"{what}: only {free} bytes free under {folder}, below the {reserve}-byte reserve "
            "(EHRSYNC_MIN_FREE_DISK_BYTES); free some space and run again, the download resumes"
        )


@contextlib.contextmanager
def _refused_for_room(folder: Path, url: str) -> Iterator[None]:
    """A write into ``folder`` refused ENOSPC or EDQUOT (the reserve set to 0, or another process filling the disk
    between two checks) is InsufficientDiskSpaceError naming the folder, as the free-space check's is: every later
    download would meet the same disk, so the landing stops instead of counting it as one file's failure."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise InsufficientDiskSpaceError(
            f"the disk is full: could not write {url} under {folder} ({os.strerror(exc.errno)}); free space there "
            "and run again, the download resumes (EHRSYNC_MIN_FREE_DISK_BYTES is the free space downloads leave)"
        ) from exc


def _open_part(dest: Path, min_free_bytes: int, url: str) -> tuple[int, Path]:
    """The open temporary file beside ``dest`` the body is written to, once the free-space check passed."""
    with _refused_for_room(dest.parent, url):
        dest.parent.mkdir(parents=True, exist_ok=True)
        check_free_disk(dest.parent, min_free_bytes, url)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    return fd, Path(tmp_name)


def stream_to_file(
    response: httpx.Response,
    dest: Path,
    max_bytes: int | None,
    *,
    min_free_bytes: int = 0,
    scratch: bool = False,
) -> Downloaded:
    """Write the (decoded, e.g. gunzipped) body to ``dest``; raise ContentTooLargeError past ``max_bytes``.

    The cap applies to decoded bytes, inflated a bounded piece at a time (``iter_decoded``), so a small gzip
    body can expand neither without bound on disk nor in memory; the bytes on the wire are capped at
    :func:`wire_allowance` of it. With ``min_free_bytes``, the free disk space is
    checked before and while writing (InsufficientDiskSpaceError; a write or the final rename the disk refuses for
    room is one too, its partial file removed). A ``scratch`` file (a Bulk file landed and
    deleted right after; a crash discards it) is neither hashed nor synced to disk: those cost a tenth of a Bulk
    export's CPU (docs/PERFORMANCE.md).
    """
    url = redact_url(str(response.url))
    declared = response.headers.get("Content-Length")
    plain = "Content-Encoding" not in response.headers
    if max_bytes is not None and plain and declared and declared.isdigit() and int(declared) > max_bytes:
        raise ContentTooLargeError(f"{url}: Content-Length {declared} exceeds the {max_bytes}-byte cap")
    fd, tmp = _open_part(dest, min_free_bytes, url)
    digest = None if scratch else hashlib.sha256()
    size = checked = 0
    try:
        with _refused_for_room(dest.parent, url):
            with os.fdopen(fd, "wb", buffering=WRITE_BUFFER_BYTES) as out:
                for chunk in iter_decoded(response, max_wire_bytes=wire_allowance(max_bytes)):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ContentTooLargeError(f"{url}: body exceeds the {max_bytes}-byte cap")
                    if size - checked >= DISK_CHECK_EVERY:
                        checked = size
                        check_free_disk(dest.parent, min_free_bytes, url)
                    if digest is not None:
                        digest.update(chunk)
                    out.write(chunk)
                out.flush()
                if not scratch:
                    os.fsync(out.fileno())
            tmp.replace(dest)  # a rename too can want room: a new block for the folder's entries
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    logger.debug("downloaded", extra={"url": url, "bytes": size})
    announced = int(declared) if declared and declared.isdigit() else None
    if response.num_bytes_downloaded == 0 and size > 0:  # a body read before streaming: no wire count to compare
        announced = None
    return Downloaded(
        dest,
        size,
        response.headers.get("Content-Type"),
        None if digest is None else digest.hexdigest(),
        response.num_bytes_downloaded,
        announced,
    )
