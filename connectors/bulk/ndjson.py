"""Line-at-a-time NDJSON reading and verification (BDX-20): never the whole file in memory."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from connectors.ndjson_files import GZIP_MAGIC, UTF8_BOM, open_ndjson

__all__ = [
    "UTF8_BOM",
    "NdjsonVerification",
    "iter_ndjson_lines",
    "iter_numbered_ndjson_lines",
    "truncation_of",
    "verify_ndjson_file",
]

_MAX_PROBLEMS = 20
#: The longest last line without a newline that is read to judge it whole or cut: a longer one is over every
#: resource limit landing takes (EHRSYNC_MAX_RESOURCE_BYTES is at most 256 MiB), so landing quarantines it, with its
#: size, whatever it holds, and it is never held in memory here.
LAST_LINE_LIMIT = 256 * 1024 * 1024 + 2
_GZIP_PIECE = 1024 * 1024


def iter_ndjson_lines(path: Path) -> Iterator[bytes]:
    """Yield each non-blank line as raw bytes without its line ending."""
    for _, line in iter_numbered_ndjson_lines(path):
        yield line


def iter_numbered_ndjson_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number in the file, line)`` for each non-blank line: blank lines are skipped but counted, so
    a number an operator reads in a report points at the same line of the server's file."""
    with open_ndjson(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line


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
    with open_ndjson(path) as handle:
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


def _gzip_cut(path: Path, max_bytes: int | None) -> str | None:
    """Why the gzip stream of ``path`` is not whole (cut short or corrupt), read through a piece at a time;
    ContentTooLargeError once its content inflates past ``max_bytes`` (the rest is never inflated)."""
    try:
        with open_ndjson(path, max_bytes) as handle:
            while handle.read(_GZIP_PIECE):
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return f"its gzip stream is cut short or corrupt ({exc})"
    return None


def truncation_of(path: Path, wire_bytes: int, declared_bytes: int | None, max_bytes: int | None = None) -> str | None:
    """Why a downloaded NDJSON file looks cut short, or ``None`` when it looks whole.

    Cut short: fewer (or more) bytes arrived than the ``Content-Length`` announced, or the last line has no
    newline and is not a complete JSON value (a server that merely omits the final newline is tolerated).
    A gzip file stored as is (no ``Content-Encoding``) must hold a whole gzip stream: its ``Content-Length`` is
    the stored file's, so a file cut in storage (or a body ending with the connection) shows only there; its
    content may inflate to ``max_bytes`` (the per-file limit a ``Content-Encoding`` body is held to while it
    downloads), past which ContentTooLargeError is raised and nothing more is inflated.
    """
    if declared_bytes is not None and wire_bytes != declared_bytes:
        return f"{wire_bytes} bytes arrived of the {declared_bytes} its Content-Length announced"
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as probe:
        if probe.read(2) == GZIP_MAGIC:
            return _gzip_cut(path, max_bytes)
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
