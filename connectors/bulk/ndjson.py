"""Line-at-a-time NDJSON reading and verification (BDX-20): never the whole file in memory."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import orjson

__all__ = ["NdjsonVerification", "iter_ndjson_lines", "truncation_of", "verify_ndjson_file"]

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_PROBLEMS = 20


def _open(path: Path) -> BinaryIO:
    """Plain or gzip file (a server may serve ``.ndjson.gz`` without ``Content-Encoding``)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


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


def _last_line(path: Path, size: int, block: int = 64 * 1024) -> bytes:
    """The bytes after the file's last newline (read backwards, block by block)."""
    with path.open("rb") as handle:
        tail = b""
        position = size
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
            cut = tail.rfind(b"\n")
            if cut >= 0:
                return tail[cut + 1 :]
        return tail


def truncation_of(path: Path, wire_bytes: int, declared_bytes: int | None) -> str | None:
    """Why a downloaded NDJSON file looks cut short, or ``None`` when it looks whole.

    Cut short: fewer (or more) bytes arrived than the ``Content-Length`` announced, or the last line has no
    newline and is not a complete JSON value (a server that merely omits the final newline is tolerated).
    A gzip file stored as is (no ``Content-Encoding``) is checked by the byte count only.
    """
    if declared_bytes is not None and wire_bytes != declared_bytes:
        return f"{wire_bytes} bytes arrived of the {declared_bytes} its Content-Length announced"
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as probe:
        if probe.read(2) == _GZIP_MAGIC:
            return None
        probe.seek(size - 1)
        if probe.read(1) == b"\n":
            return None
    last = _last_line(path, size).rstrip(b"\r")
    if not last.strip():
        return None
    try:
        orjson.loads(last)
    except orjson.JSONDecodeError:
        return "its last line stops without a newline, in the middle of a resource"
    return None
