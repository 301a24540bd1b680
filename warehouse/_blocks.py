"""NDJSON file -> blocks of lines, split by Arrow instead of a Python call per line (issue 14).

A block is a few MiB of whole lines as one Arrow binary array (the ``\\n`` separators and one ``\\r`` before
each removed), so the checks run set-based over the block (``warehouse/_vector_checks.py``). A line longer than
the writer's limit is never held whole: it becomes an ``Oversize`` (its first bytes and the size the line-by-line
reader of ``warehouse/zone.py`` reported for it), in file order with the blocks around it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
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


def _split(buf: bytes | bytearray, end: int, first_line: int, limit: int) -> Block:
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


class _ReadBuffer:
    """One buffer a file is read into, reused block after block: the partial line a block leaves is moved to its
    front, instead of a new ``bytes`` per read and another for it joined to the carried line (issue 14: each a
    few MiB that glibc serves from a fragmenting heap). Safe to reuse only because ``_split`` copies the lines
    out of it (``tests/warehouse/test_read_buffer.py`` compares every landed row with its source line)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._readinto: Callable[[memoryview], int | None] | None = getattr(fh, "readinto", None)
        self.data = bytearray(READ_BYTES)
        self.filled = 0  # bytes of ``data`` that hold the file's content: the carried line, then the last read

    def _make_room(self) -> None:
        """Room for at least half a read after the carried bytes: twice the buffer when a long line outgrows it
        (doubling keeps the copies of a line held whole linear in its length), back to a read's size after it."""
        kept, size = self.filled, len(self.data)
        if size - kept < max(1, READ_BYTES // 2):
            size = max(kept + READ_BYTES, 2 * size)
        elif size > 2 * READ_BYTES and kept + READ_BYTES < size // 4:
            size = kept + READ_BYTES
        else:
            return
        grown = bytearray(size)
        grown[:kept] = memoryview(self.data)[:kept]
        self.data = grown

    def fill(self) -> int:
        """Read up to READ_BYTES after the carried bytes; returns the bytes read (0 at the end of the file)."""
        self._make_room()
        kept = self.filled
        with memoryview(self.data) as view:
            want = min(len(view) - kept, READ_BYTES)
            if self._readinto is not None:
                got = self._readinto(view[kept : kept + want]) or 0
            else:  # a reader without readinto (not an io object)
                chunk = self._fh.read(want)
                got = len(chunk)
                view[kept : kept + got] = chunk
        self.filled = kept + got
        return got

    def keep_from(self, start: int) -> None:
        """Keep ``data[start:filled]`` (a partial line) at the front for the next read."""
        kept = self.filled - start
        if kept and start:
            with memoryview(self.data) as view:
                view[:kept] = view[start : self.filled]
        self.filled = kept

    def keep(self, rest: bytes) -> None:
        """Hold ``rest`` (read past an over-long line) at the front instead of what was there."""
        if len(rest) > len(self.data):
            self.data = bytearray(len(rest) + READ_BYTES)
        self.data[: len(rest)] = rest
        self.filled = len(rest)


def read_blocks(fh: BinaryIO, limit: int) -> Iterator[Block | Oversize]:
    """Every line of ``fh`` in order; ``limit`` is the longest line held whole (resource + CRLF)."""
    buf = _ReadBuffer(fh)
    line_no = 1
    while buf.fill():
        end = buf.data.rfind(b"\n", 0, buf.filled) + 1
        if end:
            block = _split(buf.data, end, line_no, limit)  # a copy: ``buf`` is free again once it returns
            line_no += len(block.lines)
            yield block
        if buf.filled - end >= limit:
            with memoryview(buf.data) as view:
                over, rest = _drain(fh, view[end : buf.filled], line_no, limit)
            buf.keep(rest)
            yield over
            line_no += 1
        else:
            buf.keep_from(end)
    carry = bytes(buf.data[: buf.filled])
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


def _drain(fh: BinaryIO, head: memoryview, line_no: int, limit: int) -> tuple[Oversize, bytes]:
    """Read past an over-long line whose first ``len(head) >= limit`` bytes are read, never holding it whole;
    returns it and the bytes read after its newline."""
    prefix, size, tail = bytes(head[: min(limit, QUARANTINE_PREFIX_BYTES)]), len(head), bytes(head[-DRAIN_BYTES:])
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
