"""NDJSON file -> blocks of lines, split by Arrow instead of a Python call per line (issue 14).

A block is a few MiB of whole lines as one Arrow binary array (the ``\\n`` separators and one ``\\r`` before
each removed), so the checks run set-based over the block (``warehouse/_vector_checks.py``). A line longer than
the writer's limit is never held whole: it becomes an ``Oversize`` (its first bytes and the size the line-by-line
reader of ``warehouse/zone.py`` reported for it), in file order with the blocks around it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from warehouse.limits import QUARANTINE_PREFIX_BYTES

__all__ = ["DRAIN_BYTES", "READ_BYTES", "Block", "Oversize", "read_blocks"]

READ_BYTES = 2 * 1024 * 1024
# The chunk size the line reader drained an over-long line with; its last chunk lost trailing CR/LF bytes.
DRAIN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Oversize:
    """A line over the limit that was never held whole: its first bytes and its size."""

    line_number: int
    prefix: bytes
    size: int


@dataclass(frozen=True)
class Block:
    """Whole lines ``first_line ..``; ``oversize`` maps a row over the limit to its prefix and size."""

    first_line: int
    lines: pa.Array
    oversize: dict[int, tuple[bytes, int]]


def _drained_size(limit: int, length: int, tail: bytes) -> int:
    """The size ``readline(limit)`` then ``readline(DRAIN_BYTES)`` chunks counted for a line of ``length`` bytes
    ending with a newline; ``tail`` holds at least its last DRAIN_BYTES bytes (or the whole line)."""
    rest = length - limit
    last = rest % DRAIN_BYTES or DRAIN_BYTES
    return limit + rest - last + len(tail[-last:].rstrip(b"\r\n"))


def _prefix(line: bytes, limit: int) -> bytes:
    """What the line reader kept of an over-long line: the start of its first ``readline(limit)``."""
    return line[: min(limit, QUARANTINE_PREFIX_BYTES)]


def _split(buf: bytes, end: int, first_line: int, limit: int) -> Block:
    """The whole lines of ``buf[:end]`` (``end`` just after a newline) as one block."""
    # zero-copy over ``buf`` (pa.array() of a memoryview copied it through a builder: ~35 MB more peak RSS)
    bounds = pa.py_buffer(struct.pack("<qq", 0, end - 1))
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, bounds, pa.py_buffer(buf)])
    lines = pc.split_pattern(whole, pattern=b"\n").flatten()
    oversize: dict[int, tuple[bytes, int]] = {}
    for i in pc.indices_nonzero(pc.greater_equal(pc.binary_length(lines), limit)).to_pylist():
        line = lines[i].as_py() + b"\n"
        oversize[i] = (_prefix(line, limit), _drained_size(limit, len(line), line))
    if pc.any(pc.ends_with(lines, pattern=b"\r")).as_py():
        lines = pc.replace_substring_regex(lines, pattern="\\r\\z", replacement="")
    return Block(first_line, lines, oversize)


def read_blocks(fh: BinaryIO, limit: int) -> Iterator[Block | Oversize]:
    """Every line of ``fh`` in order; ``limit`` is the longest line held whole (resource + CRLF)."""
    carry = b""
    line_no = 1
    while chunk := fh.read(READ_BYTES):
        buf = carry + chunk if carry else chunk
        end = buf.rfind(b"\n") + 1
        if end:
            block = _split(buf, end, line_no, limit)
            line_no += len(block.lines)
            yield block
        carry = buf[end:]
        if len(carry) >= limit:
            over, carry = _drain(fh, carry, line_no, limit)
            yield over
            line_no += 1
    end = carry.rfind(b"\n") + 1  # what followed the last over-long line
    if end:
        block = _split(carry, end, line_no, limit)
        line_no += len(block.lines)
        yield block
        carry = carry[end:]
    if len(carry) >= limit:  # the last line, without a newline: every byte of it counts
        yield Oversize(line_no, _prefix(carry, limit), len(carry))
    elif carry:
        yield _split(carry + b"\n", len(carry) + 1, line_no, limit)


def _drain(fh: BinaryIO, head: bytes, line_no: int, limit: int) -> tuple[Oversize, bytes]:
    """Read past an over-long line whose first ``len(head) >= limit`` bytes are read, never holding it whole;
    returns it and the bytes read after its newline."""
    prefix, size, tail = _prefix(head, limit), len(head), head[-DRAIN_BYTES:]
    while True:
        chunk = fh.read(READ_BYTES)
        if not chunk:
            return Oversize(line_no, prefix, size), b""
        nl = chunk.find(b"\n")
        if nl < 0:
            size += len(chunk)
            tail = (tail + chunk)[-DRAIN_BYTES:]
            continue
        piece = chunk[: nl + 1]
        over = Oversize(line_no, prefix, _drained_size(limit, size + len(piece), (tail + piece)[-DRAIN_BYTES:]))
        return over, chunk[nl + 1 :]
