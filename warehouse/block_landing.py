"""Whole NDJSON files land a block at a time: split, checked and written by Arrow, not a line at a time (issue 14).

``BlockLandingWriter`` is a ``LandingWriter`` (REST pages still use ``add_resource``) that also takes blocks of
lines from ``warehouse/_blocks.py``. The block's checks run set-based (``warehouse/_vector_checks.py``); the few
lines they do not pass as certainly fine go through the writer's line path, which lands or quarantines them
with the same reasons, prefixes and line numbers as ever, in file order. Row groups keep the line path's bounds:
at most ``batch_rows`` rows and ``BATCH_BYTES`` of JSON, and a resource of ``LARGE_ROW_BYTES`` or more alone.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from warehouse._blocks import Block, Oversize
from warehouse._landing_tables import assemble, open_parquet, writing
from warehouse._vector_checks import check_block
from warehouse.landed import LANDING_FILE_SCHEMA
from warehouse.landing import BATCH_BYTES, LandingWriter
from warehouse.limits import LARGE_ROW_BYTES

__all__ = ["BlockLandingWriter"]

_TS = pa.timestamp("us", tz="UTC")
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what ``bytes.strip`` removes


class BlockLandingWriter(LandingWriter):
    """A landing writer that also lands whole blocks of NDJSON lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._group: list[pa.Table] = []  # the row group being built from blocks, written by ``_emit``
        self._group_rows = 0
        self._group_bytes = 0

    def add_item(self, item: Block | Oversize) -> None:
        """Land one block, or quarantine one over-long line, in file order."""
        if isinstance(item, Oversize):
            self._ensure_open()
            self._line_number = item.line_number - 1
            self.add_oversize_line(item.prefix, item.size)
        else:
            self.add_block(item)

    def add_block(self, block: Block) -> None:
        """Land the lines of ``block``; the ones that are not certainly fine take the line path, in order."""
        self._ensure_open()
        if self._ids:
            self._flush()  # rows added line by line before this block stay before it
        lines = block.lines
        rows = check_block(lines, self._meta.resource_type, self.max_resource_bytes)
        fast, ids, vids, lus, hashes = rows.fast, rows.ids, rows.version_ids, rows.last_updated, rows.hashes
        slow = pc.indices_nonzero(pc.invert(fast)).to_pylist()
        patched: dict[int, tuple[str, datetime | None, str | None, str]] = {}
        for i in slow:
            self._line_number = block.first_line + i
            over = block.oversize.get(i)
            if over is not None:
                self._quarantine_oversize(*over)
                continue
            row = self._check_line(lines[i].as_py())
            if row is not None:  # lands stripped of ASCII whitespace (below), and is hashed so
                patched[i] = (*row[:3], hashlib.sha256(row[3].encode()).hexdigest())
        self._line_number = block.first_line + len(lines) - 1
        if patched:
            at = pa.array(sorted(patched), pa.int64())
            mask = pc.is_in(pa.array(range(len(lines)), pa.int64()), value_set=at)
            got = [patched[i] for i in sorted(patched)]
            fast = pc.or_(fast, mask)
            ids = pc.replace_with_mask(ids, mask, pa.array([g[0] for g in got], pa.string()))
            lus = pc.replace_with_mask(lus, mask, pa.array([g[1] for g in got], _TS))
            vids = pc.replace_with_mask(vids, mask, pa.array([g[2] for g in got], pa.string()))
            hashes = pc.replace_with_mask(hashes, mask, pa.array([g[3] for g in got], pa.string()))
        every = fast.true_count == len(lines)
        text = (lines if every else lines.filter(fast)).cast(pa.large_string())
        if patched:  # a line the line path landed keeps its text stripped of ASCII whitespace, as ever
            text = pc.utf8_trim(text, characters=_ASCII_SPACE)
        if not every:
            ids, lus, vids, hashes = ids.filter(fast), lus.filter(fast), vids.filter(fast), hashes.filter(fast)
        self._write_rows(ids, lus, vids, text, hashes)

    def _write_rows(self, ids: pa.Array, lus: pa.Array, vids: pa.Array, text: pa.Array, hashes: pa.Array) -> None:
        """Add landed rows to row groups bounded like the line path's batches; a group may span blocks."""
        n = len(ids)
        if n == 0:
            return
        lu_max = pc.max(lus).as_py()
        if lu_max is not None and (self._max_last_updated is None or lu_max > self._max_last_updated):
            self._max_last_updated = lu_max
        cols = (ids, lus, vids, text, hashes)
        start = 0
        for i, size in enumerate(pc.binary_length(text).to_pylist()):
            rows = self._group_rows + i - start
            if rows and (size >= LARGE_ROW_BYTES or rows >= self._batch_rows or self._group_bytes + size > BATCH_BYTES):
                self._hold(cols, start, i)
                self._emit()
                start = i
            self._group_bytes += size
            if size >= LARGE_ROW_BYTES:
                self._hold(cols, start, i + 1)
                self._emit()
                start = i + 1
        self._hold(cols, start, n)

    def _hold(self, cols: tuple[pa.Array, ...], start: int, stop: int) -> None:
        """Keep rows ``[start, stop)`` of a block for the row group being built."""
        n = stop - start
        if n <= 0:
            return
        ids, lus, vids, text, hashes = (c.slice(start, n) for c in cols)
        columns = {"id": ids, "last_updated": lus, "version_id": vids, "resource_json": text.cast(pa.string())}
        columns["content_hash"] = hashes
        self._group.append(assemble(self._meta, LANDING_FILE_SCHEMA, columns, n))
        self._group_rows += n

    def _emit(self) -> None:
        """Write the row group being built."""
        if not self._group:
            return
        with writing(self._final):
            if self._writer is None:
                self._writer = open_parquet(self._tmp, LANDING_FILE_SCHEMA)
            self._writer.write_table(pa.concat_tables(self._group))
        self._rows += self._group_rows
        self._group, self._group_rows, self._group_bytes = [], 0, 0

    def _flush(self) -> None:
        self._emit()  # block rows first: they came before any row of the line path's batch
        super()._flush()
