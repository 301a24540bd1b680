"""The size limit of one resource, and what a resource near it costs the merge.

A server decides how large its resources are: a DocumentReference with an inline attachment can be tens of
megabytes. Every resource up to ``EHRSYNC_MAX_RESOURCE_BYTES`` (default 64 MiB) is stored; a larger one is
quarantined with the reason (and its first ``QUARANTINE_PREFIX_BYTES``), never read into memory whole, and the
rest of its file lands as usual. The ceiling is 256 MiB: PostgreSQL's JSONB stores at most 255 MiB per value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from warehouse.errors import InvalidInputError

if TYPE_CHECKING:  # only annotations: the settings read the limit without loading pyarrow (issue 14)
    import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_MAX_RESOURCE_BYTES",
    "LARGE_ROW_BYTES",
    "LARGE_ROW_MEMORY_FACTOR",
    "MAX_RESOURCE_BYTES_CEILING",
    "MAX_RESOURCE_ENV",
    "QUARANTINE_PREFIX_BYTES",
    "large_row_bytes",
    "largest_row",
    "max_resource_bytes",
    "memory_mib",
]

MAX_RESOURCE_ENV = "EHRSYNC_MAX_RESOURCE_BYTES"
DEFAULT_MAX_RESOURCE_BYTES = 64 * 1024 * 1024
MAX_RESOURCE_BYTES_CEILING = 256 * 1024 * 1024
# A resource this large gets a Parquet row group of its own, so the DuckDB merge can size its memory for it.
LARGE_ROW_BYTES = 4 * 1024 * 1024
# An over-limit resource keeps this much of its text in the quarantine (enough to see what it was).
QUARANTINE_PREFIX_BYTES = 64 * 1024
# Memory a DuckDB merge needs per byte of its largest resource, above the configured limit: measured here, a 20 MB
# resource needed more than 128 MB, and 40 and 64 MB ones fitted in 512 MB (the JSON cast parses the text).
LARGE_ROW_MEMORY_FACTOR = 8
_MIB = 1024 * 1024
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*((?:[KMGT]i?)?B?)", re.IGNORECASE)


def max_resource_bytes(env: Mapping[str, str] | None = None) -> int:
    """The configured limit; a malformed value raises ``InvalidInputError`` naming the variable."""
    raw = (os.environ if env is None else env).get(MAX_RESOURCE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RESOURCE_BYTES
    if not (raw.isascii() and raw.isdigit()) or not 1024 <= int(raw) <= MAX_RESOURCE_BYTES_CEILING:
        raise InvalidInputError(
            f"{MAX_RESOURCE_ENV}={raw!r} is not a whole number of bytes from 1024 to {MAX_RESOURCE_BYTES_CEILING}"
        )
    return int(raw)


def large_row_bytes(group: pq.RowGroupMetaData) -> int | None:
    """The size of the one large resource a row group holds, or None (landing isolates those, landing.py)."""
    if group.num_rows == 1 and group.total_byte_size >= LARGE_ROW_BYTES:
        return int(group.total_byte_size)
    return None


def largest_row(meta: pq.FileMetaData, rows: tuple[int, int] | None) -> int | None:
    """The largest isolated resource among the row groups of file rows ``[start, stop)`` (all when None)."""
    largest: int | None = None
    offset = 0
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        inside = rows is None or rows[0] <= offset < rows[1]
        offset += group.num_rows
        size = large_row_bytes(group) if inside else None
        if size is not None and (largest is None or size > largest):
            largest = size
    return largest


def memory_mib(limit: str) -> int:
    """``memory_limit`` text (``128MB``, ``1GiB``, ``512KB``) in MiB, rounded up."""
    match = _MEMORY.fullmatch(limit.strip())
    if match is None:
        raise InvalidInputError(f"memory_limit {limit!r} is not a size such as '128MB' or '1GiB'")
    number, unit = float(match.group(1)), match.group(2).upper().removesuffix("B")
    binary = unit.endswith("I")  # DuckDB's spelling: KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024
    power = " KMGT".index(unit.removesuffix("I") or " ")
    return max(1, -(-int(number * (1024 if binary else 1000) ** power) // _MIB))
