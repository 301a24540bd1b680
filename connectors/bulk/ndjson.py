"""Line-at-a-time NDJSON reading and verification (BDX-20): never the whole file in memory."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import orjson

__all__ = ["UTF8_BOM", "NdjsonVerification", "iter_ndjson_lines", "past_bom", "truncation_of", "verify_ndjson_file"]

_GZIP_MAGIC = b"\x1f\x8b"
#: A UTF-8 byte order mark: RFC 8259 lets a parser ignore one, and .NET writers put one first by default.
UTF8_BOM = b"\xef\xbb\xbf"
_MAX_PROBLEMS = 20
#: The longest last line without a newline that is read to judge it whole or cut: a longer one is over every
#: resource limit landing takes (EHRSYNC_MAX_RESOURCE_BYTES is at most 256 MiB), so landing quarantines it, with its
#: size, whatever it holds, and it is never held in memory here.
LAST_LINE_LIMIT = 256 * 1024 * 1024 + 2


def _open(path: Path) -> BinaryIO:
    """Plain or gzip file (a server may serve ``.ndjson.gz`` without ``Content-Encoding``), past a leading BOM
    (else its first line is no JSON, and an error file's first OperationOutcome would go unread)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return past_bom(cast(BinaryIO, gzip.open(path, "rb")))
    return past_bom(path.open("rb"))


def past_bom(handle: BinaryIO) -> BinaryIO:
    """``handle`` (at its start) moved past a UTF-8 byte order mark, if it begins with one."""
    if handle.read(len(UTF8_BOM)) != UTF8_BOM:
        handle.seek(0)
    return handle


def iter_ndjson_lines(path: Path) -> Iterator[bytes]:
    """Yield each non-blank line as raw bytes without its line ending."""
    with _open(path) as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


@dataclass(frozen=True)
class NdjsonVerification:
    """Counts for one bulk file. ``problems`` names line numbers only (never content: it is PHI)."""

    path: Path
    expected_type: str
    expected_count: int | None
    lines: int = 0
    invalid_json: int = 0
    wrong_type: int = 0
    blank_lines: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def count_matches(self) -> bool:
        return self.expected_count is None or self.expected_count == self.lines

    @property
    def ok(self) -> bool:
        """Every line is JSON of the expected type and the count matches (blank lines are tolerated)."""
        return self.invalid_json == 0 and self.wrong_type == 0 and self.count_matches


def verify_ndjson_file(path: Path, expected_type: str, expected_count: int | None = None) -> NdjsonVerification:
    """Check every line parses, has ``resourceType == expected_type``, and the count equals ``expected_count``."""
    lines = invalid = wrong = blank = 0
    problems: list[str] = []
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                blank += 1
                continue
            lines += 1
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError:
                invalid += 1
                if len(problems) < _MAX_PROBLEMS:
                    problems.append(f"line {number}: not valid JSON")
                continue
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            if kind != expected_type:
                wrong += 1
                if len(problems) < _MAX_PROBLEMS:
                    problems.append(f"line {number}: resourceType {kind!r}, expected {expected_type!r}")
    if expected_count is not None and expected_count != lines:
        problems.append(f"manifest count {expected_count}, file has {lines} resources")
    return NdjsonVerification(path, expected_type, expected_count, lines, invalid, wrong, blank, problems)


def _last_line(path: Path, size: int, block: int = 64 * 1024) -> bytes | None:
    """The bytes after the file's last newline, read backwards a block at a time and joined once (each block
    prepended to the rest took time quadratic in the line: 95 s for a 128 MB one); None past LAST_LINE_LIMIT."""
    pieces: list[bytes] = []
    with path.open("rb") as handle:
        position = size
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            piece = handle.read(step)
            cut = piece.rfind(b"\n")
            if cut >= 0:
                pieces.append(piece[cut + 1 :])
                break
            pieces.append(piece)
            if size - position > LAST_LINE_LIMIT:
                return None
    return b"".join(reversed(pieces))


def _gzip_cut(path: Path) -> str | None:
    """Why the gzip stream of ``path`` is not whole (cut short or corrupt), read through a piece at a time."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1024 * 1024):
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return f"its gzip stream is cut short or corrupt ({exc})"
    return None


def truncation_of(path: Path, wire_bytes: int, declared_bytes: int | None) -> str | None:
    """Why a downloaded NDJSON file looks cut short, or ``None`` when it looks whole.

    Cut short: fewer (or more) bytes arrived than the ``Content-Length`` announced, or the last line has no
    newline and is not a complete JSON value (a server that merely omits the final newline is tolerated).
    A gzip file stored as is (no ``Content-Encoding``) must hold a whole gzip stream: its ``Content-Length`` is
    the stored file's, so a file cut in storage (or a body ending with the connection) shows only there.
    """
    if declared_bytes is not None and wire_bytes != declared_bytes:
        return f"{wire_bytes} bytes arrived of the {declared_bytes} its Content-Length announced"
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as probe:
        if probe.read(2) == _GZIP_MAGIC:
            return _gzip_cut(path)
        probe.seek(size - 1)
        if probe.read(1) == b"\n":
            return None
    last = _last_line(path, size)
    if last is not None and len(last) == size:  # the file's only line: past its BOM, as every reader reads it
        last = last.removeprefix(UTF8_BOM)
    if last is None or not last.rstrip(b"\r").strip():
        return None
    try:
        orjson.loads(last.rstrip(b"\r"))
    except orjson.JSONDecodeError:
        return "its last line stops without a newline, in the middle of a resource"
    return None
